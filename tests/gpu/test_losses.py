"""gpu.losses: the structure term that keeps a painted frame recognizable."""

from __future__ import annotations

import pytest
import torch

from gpu.losses import structure_loss


@pytest.fixture
def frames() -> torch.Tensor:
    """Two smooth 64x64 frames with shapes at a scale the 4x4 pooling keeps."""
    generator = torch.Generator().manual_seed(0)
    coarse = torch.rand(2, 3, 8, 8, generator=generator)
    return torch.nn.functional.interpolate(coarse, size=(64, 64), mode="bicubic",
                                           align_corners=False).clamp(0, 1)


def test_the_same_frame_keeps_all_its_structure(frames: torch.Tensor) -> None:
    assert structure_loss(frames, frames).abs().max() < 1e-4


def test_brightness_contrast_and_palette_cost_no_structure(frames: torch.Tensor) -> None:
    brighter = (0.5 * frames + 0.3).clamp(0, 1)
    assert structure_loss(brighter, frames).max() < 1e-3
    grey = frames.mean(dim=1, keepdim=True).expand_as(frames)
    # Only the luminance counts: a new palette with the same light and dark is free.
    tinted = grey * grey.new_tensor([1.0, 0.9, 0.6]).view(1, 3, 1, 1)
    assert structure_loss(tinted, grey).max() < 0.05


def test_strokes_finer_than_the_pooling_are_free(frames: torch.Tensor) -> None:
    checker = (torch.arange(64)[:, None] + torch.arange(64)[None, :]) % 2 * 0.2 - 0.1
    textured = (frames * 0.8 + 0.1 + checker).clamp(0, 1)
    assert structure_loss(textured, frames).max() < 0.01


def test_a_negative_and_an_unrelated_frame_lose_the_structure(frames: torch.Tensor) -> None:
    negative = structure_loss(1 - frames, frames)
    # Tone is anticorrelated (1 - (-1) = 2); outlines keep their magnitude (0).
    assert torch.allclose(negative, torch.full_like(negative, 2.0), atol=1e-3)
    unrelated = structure_loss(frames.flip(0), frames)
    assert (unrelated > 0.5).all()


def test_the_loss_is_differentiable_and_per_frame(frames: torch.Tensor) -> None:
    painted = frames.flip(0).clone().requires_grad_(True)
    loss = structure_loss(painted, frames)
    assert loss.shape == (2,)
    loss.sum().backward()
    assert painted.grad is not None and painted.grad.abs().sum() > 0
