"""The report's measures of a stylized frame: training's losses and the warping error.

* Losses: the content loss and the Gram style loss by training's own criterion
  (:class:`gpu.losses.PerceptualLoss`: the same Caffe VGG19, content layer, style layers, style
  image size and normalisation), one criterion per style (:func:`style_targets`).
* Temporal stability: the warping error of Lai et al. (2018). Optical flow is computed on the
  *input* frames with OpenCV's DIS; pixels failing a forward-backward consistency check
  (occlusions, flow errors) or leaving the frame are masked out. The error of a pair is the
  mean over valid pixels of the squared RGB distance (0..1 scale) between stylized frame t and
  stylized frame t+1 warped back to t; a clip's error is the mean over its pairs.

The structure score lives in :mod:`bench.quality.structure`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from bench.quality.inputs import find_painting, model_settings, read_rgb
from gpu.losses import STYLE_LAYERS, PerceptualLoss
from gpu.train_data import resize_long_side
from gpu.vgg import VGG19Features, load_vgg19

# Forward-backward consistency (Sundaram et al. 2010, as used by Ruder et al. 2016): a pixel is
# valid when |w + w_back|^2 <= ALPHA * (|w|^2 + |w_back|^2) + BETA, flows in pixels.
CONSISTENCY_ALPHA = 0.01
CONSISTENCY_BETA = 0.5


def dis_flow(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Dense flow from ``first`` to ``second`` (RGB uint8), (H, W, 2) float32 in pixels (dx, dy).

    ``first[y, x]`` is found at ``second[y + dy, x + dx]``.
    """
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    return dis.calc(cv2.cvtColor(first, cv2.COLOR_RGB2GRAY),
                    cv2.cvtColor(second, cv2.COLOR_RGB2GRAY), None)


def warp_back(image: np.ndarray, flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sample ``image`` at ``x + flow(x)``: brings the second frame of a pair onto the first.

    Args:
        image: (H, W) or (H, W, C) float32.
        flow: (H, W, 2) flow from the first frame to ``image``'s frame.

    Returns:
        The warped image and a boolean (H, W) mask of pixels whose source lies inside ``image``.
    """
    height, width = flow.shape[:2]
    grid_x, grid_y = np.meshgrid(np.arange(width, dtype=np.float32),
                                 np.arange(height, dtype=np.float32))
    map_x, map_y = grid_x + flow[..., 0], grid_y + flow[..., 1]
    warped = cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                       borderValue=0)
    inside = (map_x >= 0) & (map_x <= width - 1) & (map_y >= 0) & (map_y <= height - 1)
    return warped, inside


def consistent_flow_mask(forward: np.ndarray, backward: np.ndarray) -> np.ndarray:
    """Pixels of the first frame whose forward flow the backward flow undoes (not occluded)."""
    backward_at_target, inside = warp_back(backward, forward)
    mismatch = np.square(forward + backward_at_target).sum(axis=-1)
    magnitude = np.square(forward).sum(axis=-1) + np.square(backward_at_target).sum(axis=-1)
    return inside & (mismatch <= CONSISTENCY_ALPHA * magnitude + CONSISTENCY_BETA)


def clip_flows(frames: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """(forward flow, valid mask) for each consecutive pair of input frames (T, H, W, 3) uint8."""
    pairs = []
    for first, second in zip(frames[:-1], frames[1:], strict=True):
        forward = dis_flow(first, second)
        pairs.append((forward, consistent_flow_mask(forward, dis_flow(second, first))))
    return pairs


def pair_warping_error(first: np.ndarray, second: np.ndarray, flow: np.ndarray,
                       mask: np.ndarray) -> float:
    """Mean over ``mask`` of the squared RGB distance between ``first`` and warped ``second``.

    Frames are uint8 or float in [0, 1], (H, W, 3).
    """
    first, second = _unit_float(first), _unit_float(second)
    warped, inside = warp_back(second, flow)
    valid = mask & inside
    if not valid.any():
        raise ValueError("no valid pixel to compare: the flow masks out the whole frame")
    return float(np.square(first - warped).sum(axis=-1)[valid].mean())


def warping_error(frames: np.ndarray, flows: list[tuple[np.ndarray, np.ndarray]]) -> float:
    """Mean pair warping error of ``frames`` (T, H, W, 3) under flows from :func:`clip_flows`."""
    if len(frames) != len(flows) + 1:
        raise ValueError(f"{len(frames)} frames need {len(frames) - 1} flows, got {len(flows)}")
    errors = [pair_warping_error(frames[t], frames[t + 1], flow, mask)
              for t, (flow, mask) in enumerate(flows)]
    return float(np.mean(errors))


def _unit_float(image: np.ndarray) -> np.ndarray:
    return image.astype(np.float32) / 255.0 if image.dtype == np.uint8 else image.astype(
        np.float32)


def perceptual_losses(criterion: PerceptualLoss, output: np.ndarray, content: np.ndarray,
                      device: torch.device) -> dict[str, float]:
    """Training's normalised content and Gram style losses of ``output`` for ``content``.

    Both images are uint8 (H, W, 3); losses are computed in fp32.
    """
    def to_tensor(image: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(image).to(device).permute(2, 0, 1)[None].float() / 255.0

    with torch.no_grad():
        losses = criterion(to_tensor(output), to_tensor(content))
    return {"content_loss": float(losses["content"]), "style_loss": float(losses["style"])}


@dataclass
class StyleTarget:
    """What a style's networks are judged against."""

    painting: np.ndarray  # as read, for the contact sheets
    painting_file: Path  # its hash keys the Gatys cache
    style_image: np.ndarray  # at the criterion's style size: Gatys gets exactly this image
    content_layer: str
    criterion: PerceptualLoss


def style_targets(models: dict[str, Path], styles_dirs: list[Path], style_size: int | None,
                  vgg_weights: Path | None, device: torch.device) -> dict[str, StyleTarget]:
    """Each style's painting and training criterion, from its shipped model's settings.

    ``style_size`` overrides the models' own painting size.
    """
    vgg_by_layer: dict[str, VGG19Features] = {}
    targets = {}
    for style, model_path in models.items():
        settings = model_settings(model_path)
        layer = settings["content_layer"]
        if layer not in vgg_by_layer:
            vgg_by_layer[layer] = load_vgg19([layer, *STYLE_LAYERS], vgg_weights, device)
        painting_file = find_painting(styles_dirs, style)
        painting = read_rgb(painting_file)
        style_tensor = resize_long_side(torch.from_numpy(painting),
                                        style_size or settings["style_size"])
        targets[style] = StyleTarget(
            painting=painting,
            painting_file=painting_file,
            style_image=(style_tensor[0].permute(1, 2, 0) * 255).round().byte().numpy(),
            content_layer=layer,
            criterion=PerceptualLoss(vgg_by_layer[layer], style_tensor.to(device), layer))
    return targets


def mean_of(records: list[dict[str, float]], key: str) -> float:
    """The mean of ``key`` over ``records``."""
    return float(np.mean([record[key] for record in records]))


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """``numerator / denominator``, or None when either is unknown or the denominator is 0."""
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator
