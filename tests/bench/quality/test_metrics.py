"""bench.quality.metrics: the warping error's parts on known motion, and training's losses."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from bench.quality import metrics
from gpu.losses import STYLE_LAYERS, PerceptualLoss
from gpu.vgg import load_vgg19
from tests.quality_content import smooth_texture


@pytest.fixture(scope="module")
def shifted_pair() -> tuple[np.ndarray, np.ndarray]:
    """Two frames of one texture; the content moves 5 px right and 3 px down between them."""
    texture = smooth_texture(0)
    return texture[20:148, 20:148].copy(), texture[17:145, 15:143].copy()


def test_dis_flow_recovers_a_known_shift(shifted_pair: tuple[np.ndarray, np.ndarray]) -> None:
    flow = metrics.dis_flow(*shifted_pair)
    assert np.median(flow[..., 0]) == pytest.approx(5.0, abs=0.25)
    assert np.median(flow[..., 1]) == pytest.approx(3.0, abs=0.25)


def test_warping_error_near_zero_for_a_consistent_pair_and_large_otherwise(
        shifted_pair: tuple[np.ndarray, np.ndarray]) -> None:
    first, second = shifted_pair
    flows = metrics.clip_flows(np.stack([first, second]))
    assert 0.8 < flows[0][1].mean() < 1.0  # only the strip that leaves the frame is masked
    consistent = metrics.warping_error(np.stack([first, second]), flows)
    other_texture = smooth_texture(1)[20:148, 20:148]
    flickering = np.clip(second.astype(int) + 40, 0, 255).astype(np.uint8)
    assert consistent < 1e-4
    assert metrics.warping_error(np.stack([first, other_texture]), flows) > 100 * consistent
    assert metrics.warping_error(np.stack([first, flickering]), flows) > 100 * consistent


def test_warp_back_with_an_integer_flow_is_a_shift() -> None:
    image = smooth_texture(2, 64).astype(np.float32)
    flow = np.zeros((64, 64, 2), np.float32)
    flow[..., 0], flow[..., 1] = 4, -2
    warped, inside = metrics.warp_back(image, flow)
    np.testing.assert_allclose(warped[2:, :-4], image[:-2, 4:], atol=1e-4)
    assert inside[2:, :-4].all() and not inside[:2].any() and not inside[:, -4:].any()


def test_consistency_mask_keeps_inverse_flows_and_drops_contradicting_ones() -> None:
    forward = np.zeros((32, 48, 2), np.float32)
    forward[..., 0] = 4
    assert metrics.consistent_flow_mask(forward, -forward)[:, :-4].all()
    assert not metrics.consistent_flow_mask(forward, -forward)[:, -4:].any()  # leaves the frame
    assert not metrics.consistent_flow_mask(forward, forward).any()  # an occlusion's signature
    zero = np.zeros_like(forward)
    assert metrics.consistent_flow_mask(zero, zero).all()


def test_warping_error_checks_frame_and_flow_counts(
        shifted_pair: tuple[np.ndarray, np.ndarray]) -> None:
    flows = metrics.clip_flows(np.stack(shifted_pair))
    with pytest.raises(ValueError, match="3 frames need 2 flows"):
        metrics.warping_error(np.stack([*shifted_pair, shifted_pair[0]]), flows)


@pytest.fixture(scope="module")
def criterion() -> PerceptualLoss:
    vgg = load_vgg19(["relu4_2", *STYLE_LAYERS])
    style = torch.from_numpy(smooth_texture(3, 96)).permute(2, 0, 1)[None].float() / 255
    return PerceptualLoss(vgg, style, "relu4_2")


def test_gram_and_content_losses_are_zero_for_identical_inputs(criterion: PerceptualLoss) -> None:
    painting = smooth_texture(3, 96)  # the criterion's style image, as the fixture made it
    losses = metrics.perceptual_losses(criterion, painting, painting, torch.device("cpu"))
    assert losses["style_loss"] == pytest.approx(0.0, abs=1e-6)
    assert losses["content_loss"] == pytest.approx(0.0, abs=1e-6)


def test_losses_grow_for_a_different_image(criterion: PerceptualLoss) -> None:
    content = smooth_texture(4, 96)
    blurred = cv2.GaussianBlur(content, (0, 0), 4.0)
    same = metrics.perceptual_losses(criterion, content, content, torch.device("cpu"))
    changed = metrics.perceptual_losses(criterion, blurred, content, torch.device("cpu"))
    assert same["content_loss"] == pytest.approx(0.0, abs=1e-6)
    assert changed["content_loss"] > 0.05
    assert changed["style_loss"] != pytest.approx(same["style_loss"], rel=0.05)
