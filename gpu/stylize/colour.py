"""Colour conversion on the device: raw input planes to RGB, and RGB to BT.709 YUV 4:2:0."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from gpu.jobdir import YCBCR_MATRICES
from gpu.stylize.frames import FrameLayout

OUTPUT_MATRIX = "bt709"
"""The YCbCr matrix of the stylized chunks, whatever the input's."""

# Its luma weights; Cb and Cr divide B - Y and R - Y by these to span [-0.5, 0.5].
KR, KB = YCBCR_MATRICES[OUTPUT_MATRIX]
CB_SCALE, CR_SCALE = 2 * (1 - KB), 2 * (1 - KR)


def rgb_to_yuv420(rgb: torch.Tensor) -> torch.Tensor:
    """BT.709 limited-range planar YUV 4:2:0 bytes of RGB frames, computed where ``rgb`` lives.

    Args:
        rgb: ``(N, 3, H, W)`` floats in [0, 1], ``H`` and ``W`` even.

    Returns:
        ``(N, H*W + 2*(H/2)*(W/2))`` uint8: each row is the Y plane then the U and V planes,
        the layout of FFmpeg's ``yuv420p``. Chroma sits on even columns between row pairs
        (H.264's default "left" siting): rows are averaged in pairs, columns filtered 1-2-1.
    """
    red, green, blue = rgb.unbind(1)
    luma = KR * red + (1 - KR - KB) * green + KB * blue
    chroma = torch.stack([(blue - luma) / CB_SCALE, (red - luma) / CR_SCALE], 1)
    rows = (chroma[..., 0::2, :] + chroma[..., 1::2, :]) / 2
    padded = F.pad(rows, (1, 1, 0, 0), mode="replicate")
    sited = padded[..., 0:-2:2] / 4 + padded[..., 1:-1:2] / 2 + padded[..., 2::2] / 4
    planes = [(16 + 219 * luma).flatten(1), (128 + 224 * sited).flatten(1)]
    return torch.cat(planes, 1).round_().clamp_(0, 255).to(torch.uint8)


def raw_to_rgb(frames: torch.Tensor, layout: FrameLayout) -> torch.Tensor:
    """RGB of raw decoded frames, computed where ``frames`` lives.

    Args:
        frames: ``(N, layout.frame_bytes)`` uint8 rows as FFmpeg writes ``layout.pix_fmt``.
        layout: Their size and format.

    Returns:
        ``(N, 3, H, W)`` floats in [0, 1], channels_last in memory.
    """
    if layout.pix_fmt == "yuv420p":
        matrix = layout.input_format.matrix
        assert matrix is not None  # InputFormat guarantees it
        return yuv420_to_rgb(frames, layout.width, layout.height, matrix)
    return gbrp_to_rgb(frames, layout.width, layout.height)


def gbrp_to_rgb(frames: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """``(N, 3, H, W)`` floats in [0, 1] (channels_last) of ``(N, 3*H*W)`` uint8 ``gbrp`` rows.

    FFmpeg's planar RGB stores the planes in G, B, R order.
    """
    green, blue, red = frames.reshape(len(frames), 3, height, width).unbind(1)
    return torch.stack([red, green, blue], -1).float().div_(255).permute(0, 3, 1, 2)


def yuv420_to_rgb(frames: torch.Tensor, width: int, height: int, matrix: str) -> torch.Tensor:
    """``(N, 3, H, W)`` floats in [0, 1] (channels_last) of limited-range ``yuv420p`` rows.

    The inverse of :func:`rgb_to_yuv420` for any matrix of :data:`gpu.jobdir.YCBCR_MATRICES`:
    chroma sits on even columns between row pairs (H.264's default "left" siting) and is
    interpolated linearly to every pixel (see :func:`upsample_chroma`); Y spans 16-235 and Cb
    and Cr 16-240 around 128. Values outside the RGB cube are clipped.

    Args:
        frames: ``(N, H*W + 2*(H/2)*(W/2))`` uint8: the Y plane, then the U and V planes.
        width: Frame width, even.
        height: Frame height, even.
        matrix: Key of :data:`gpu.jobdir.YCBCR_MATRICES`.
    """
    kr, kb = YCBCR_MATRICES[matrix]
    count, luma_bytes = len(frames), width * height
    x = frames.float()
    luma = (x[:, :luma_bytes].reshape(count, height, width) - 16) / 219
    chroma = (x[:, luma_bytes:].reshape(count, 2, height // 2, width // 2) - 128) / 224
    cb, cr = upsample_chroma(chroma).unbind(1)
    red = luma + 2 * (1 - kr) * cr
    blue = luma + 2 * (1 - kb) * cb
    green = (luma - kr * red - kb * blue) / (1 - kr - kb)
    return torch.stack([red, green, blue], -1).clamp_(0, 1).permute(0, 3, 1, 2)


def upsample_chroma(chroma: torch.Tensor) -> torch.Tensor:
    """4:2:0 chroma planes ``(N, C, H/2, W/2)`` interpolated to ``(N, C, H, W)``, left-sited.

    Chroma sample ``(i, j)`` sits at luma column ``2j`` and halfway between luma rows ``2i``
    and ``2i + 1`` (what :func:`rgb_to_yuv420` produces and H.264 assumes by default). Luma row
    ``2i`` is a quarter of a chroma row from sample row ``i``, so it takes 3/4 of it and 1/4 of
    row ``i - 1``; even columns take their sample, odd ones the mean of their two neighbours.
    Edges repeat the last sample.
    """
    count, planes, rows, columns = chroma.shape
    padded = F.pad(chroma, (0, 0, 1, 1), mode="replicate")
    upper = 0.75 * chroma + 0.25 * padded[..., :-2, :]
    lower = 0.75 * chroma + 0.25 * padded[..., 2:, :]
    tall = torch.stack([upper, lower], -2).reshape(count, planes, 2 * rows, columns)
    right = F.pad(tall, (0, 1, 0, 0), mode="replicate")[..., 1:]
    wide = torch.stack([tall, (tall + right) / 2], -1)
    return wide.reshape(count, planes, 2 * rows, 2 * columns)


