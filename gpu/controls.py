"""The user's controls over a painted frame: brush size (stroke scale) and original colours.

Strength lives in the network itself (:meth:`gpu.model.StyleNet.set_strength`); the two
controls here wrap any network and work on RGB frames in [0, 1], shaped (N, 3, H, W), on the
device the frames are on. The GPU job and the quality report both paint through :func:`paint`,
so what the report measures is what the job delivers.

* Stroke scale: a feed-forward network paints strokes of a fixed size in pixels, so on a larger
  frame they look smaller. The network therefore runs at a working height of
  :data:`REFERENCE_HEIGHT` / stroke scale lines whatever the frame's size, and the frame is
  resized on the way in and out: twice the stroke scale gives strokes twice as large, and a
  720p and a 1080p frame look alike. A frame shorter than the working height is painted at its
  own size, since enlarging it adds no detail, only work.
* Original colours (Gatys et al. 2016, "Preserving Color in Neural Artistic Style Transfer"):
  luminance from the painted frame, chroma from the source. Under a luma matrix
  Y = kr R + kg G + kb B, both chroma components are linear in B - Y and R - Y, so adding the
  luminance difference to all three channels of the source changes Y alone.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

# Working height at stroke scale 1. Lower heights paint larger strokes, but the upscaled result
# loses the fine texture the style is made of (docs/quality.md compares 540 and 720).
REFERENCE_HEIGHT = 720
STROKE_SCALE_RANGE = (0.25, 4.0)
MIN_WORKING_SIDE = 16
LUMA_WEIGHTS = {"bt601": (0.299, 0.587, 0.114), "bt709": (0.2126, 0.7152, 0.0722)}


def check_stroke_scale(stroke_scale: float) -> float:
    low, high = STROKE_SCALE_RANGE
    if not low <= stroke_scale <= high:
        raise ValueError(f"stroke scale must be within [{low}, {high}], got {stroke_scale}")
    return float(stroke_scale)


def _even(value: float) -> int:
    return max(MIN_WORKING_SIDE, 2 * round(value / 2))


def working_size(height: int, width: int, stroke_scale: float) -> tuple[int, int]:
    """The (height, width) the network paints a ``height`` x ``width`` frame at."""
    working_height = REFERENCE_HEIGHT / check_stroke_scale(stroke_scale)
    if working_height >= height:
        return height, width
    working_height = _even(working_height)
    return working_height, _even(working_height * width / height)


def resize(frames: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize to ``size``, antialiased when shrinking so strokes do not alias."""
    if tuple(frames.shape[-2:]) == tuple(size):
        return frames
    out = F.interpolate(frames, size=size, mode="bilinear", align_corners=False, antialias=True)
    return out.clamp_(0, 1)


def luma(rgb: torch.Tensor, matrix: str = "bt709") -> torch.Tensor:
    """Luminance (N, 1, H, W) of RGB frames under ``matrix``'s weights."""
    try:
        kr, kg, kb = LUMA_WEIGHTS[matrix]
    except KeyError:
        raise ValueError(f"unknown colour matrix {matrix!r}; known: {sorted(LUMA_WEIGHTS)}"
                         ) from None
    return kr * rgb[:, 0:1] + kg * rgb[:, 1:2] + kb * rgb[:, 2:3]


def preserve_colors(stylized: torch.Tensor, source: torch.Tensor, matrix: str = "bt709"
                    ) -> torch.Tensor:
    """The source's colours under the painted frame's luminance.

    Not clamped: a bright luminance under a saturated colour leaves the RGB cube, and only a
    conversion to Y'CbCr before clamping keeps the source's chroma exactly.
    """
    source = source.to(stylized.dtype)
    return source + (luma(stylized, matrix) - luma(source, matrix))


def paint(network: Callable[[torch.Tensor], torch.Tensor], frames: torch.Tensor, *,
          stroke_scale: float = 1.0, keep_colors: bool = False, matrix: str = "bt709"
          ) -> torch.Tensor:
    """``frames`` painted by ``network`` at the stroke scale, optionally in their own colours."""
    height, width = frames.shape[-2:]
    painted = network(resize(frames, working_size(height, width, stroke_scale)))
    painted = resize(painted, (height, width))
    return preserve_colors(painted, frames, matrix) if keep_colors else painted
