"""Images for training: the style image and the content set.

The GPU machine may lack Pillow, so images are decoded with Pillow when it is importable and
otherwise with the FFmpeg binary (:mod:`gpu.ffmpeg`): its packet listing gives an image's size
without decoding it, and a PPM on stdout gives its pixels and size in one go.

Content set formats accepted by :func:`load_content` (all give a uint8 tensor (N, H, W, 3), RGB):

* **Packed tensor (preferred)**: a ``.pt`` file holding one uint8 tensor shaped (N, H, W, 3)
  (saved with ``torch.save``; loaded with ``weights_only=True``), or a ``.npy`` uint8 array of the
  same shape. All images share one size, e.g. 320x320, larger than the training crop
  (``--image-size``, default 256) so random crops differ. Smaller packs are upscaled to the crop.
* **Directory** of ``.jpg``/``.jpeg``/``.png``/``.webp`` files (sorted by name, not recursive):
  each image is resized so its shorter side is ``side`` pixels and centre-cropped to a square.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from gpu.ffmpeg import QUIET_OPTIONS, FFmpegError, find_ffmpeg, list_packets, run_ffmpeg

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
MIN_STYLE_SIDE = 64
MAX_STYLE_PIXELS = 40_000_000
PPM_HEADER = re.compile(rb"P6\s(\d+)\s(\d+)\s255\s")
"""A binary 8-bit PPM's header as FFmpeg writes it: one whitespace byte between fields."""


class ImageError(ValueError):
    """An input image is unreadable or unusable; the message names the file and the reason."""


def _pillow():
    try:
        from PIL import Image
    except ImportError:
        return None
    return Image


def image_size(path: Path, ffmpeg: str | None = None) -> tuple[int, int]:
    """(width, height) of an image file without decoding its pixels."""
    image_module = _pillow()
    if image_module is not None:
        try:
            with image_module.open(path) as image:
                return image.size
        except (OSError, SyntaxError) as err:  # Pillow's UnidentifiedImageError is an OSError
            raise ImageError(f"{path}: not a readable image ({err})") from None
    try:
        listing = list_packets(_require_ffmpeg(ffmpeg), path)
    except FFmpegError as err:
        raise ImageError(f"{path}: not a readable image ({_last_line(err)})") from None
    if not listing.width or not listing.height:
        raise ImageError(f"{path}: not a readable image (FFmpeg finds no picture size)")
    return listing.width, listing.height


def _require_ffmpeg(ffmpeg: str | None) -> str:
    try:
        return find_ffmpeg(ffmpeg)
    except FileNotFoundError:
        raise RuntimeError("decoding images needs Pillow or an ffmpeg binary (pass --ffmpeg "
                           "PATH)") from None


def _last_line(err: FFmpegError) -> str:
    return (err.stderr.strip().splitlines() or ["no picture"])[-1]


def _decode_ppm(path: Path, ffmpeg: str | None) -> torch.Tensor:
    """The first picture of ``path`` decoded by FFmpeg, as uint8 (H, W, 3) RGB.

    A binary PPM carries its own size (``P6\\n<width> <height>\\n255\\n``), then the pixels.
    """
    argv = [_require_ffmpeg(ffmpeg), *QUIET_OPTIONS, "-i", str(path), "-frames:v", "1",
            "-f", "image2pipe", "-c:v", "ppm", "-pix_fmt", "rgb24", "pipe:1"]
    try:
        data = run_ffmpeg(argv)
    except FFmpegError as err:
        raise ImageError(f"{path}: not a readable image ({_last_line(err)})") from None
    header = PPM_HEADER.match(data)
    if header is None:
        raise ImageError(f"{path}: not a readable image (FFmpeg wrote no picture)")
    width, height = int(header[1]), int(header[2])
    pixels = data[header.end():]
    if len(pixels) != width * height * 3:
        raise ImageError(f"{path}: not a readable image ({len(pixels)} bytes of pixels for "
                         f"{width}x{height})")
    return torch.frombuffer(bytearray(pixels), dtype=torch.uint8).view(height, width, 3)


def read_image(path: Path, ffmpeg: str | None = None) -> torch.Tensor:
    """Decode an image file to a uint8 tensor (H, W, 3), RGB (alpha dropped, grey expanded)."""
    image_module = _pillow()
    if image_module is not None:
        try:
            with image_module.open(path) as image:
                return torch.from_numpy(np.array(image.convert("RGB"), dtype=np.uint8))
        except (OSError, SyntaxError) as err:
            raise ImageError(f"{path}: not a readable image ({err})") from None
    return _decode_ppm(path, ffmpeg)


def load_style_image(path: Path, ffmpeg: str | None = None) -> torch.Tensor:
    """Read and validate a style image: uint8 (H, W, 3).

    Raises:
        ImageError: Missing, not an image, smaller than 64 px on a side or over 40 megapixels.
    """
    if not path.is_file():
        raise ImageError(f"{path}: style image not found")
    width, height = image_size(path, ffmpeg)
    if min(width, height) < MIN_STYLE_SIDE:
        raise ImageError(f"{path}: style image is {width}x{height}; it must be at least "
                         f"{MIN_STYLE_SIDE} px on each side")
    if width * height > MAX_STYLE_PIXELS:
        raise ImageError(f"{path}: style image is {width}x{height} ({width * height / 1e6:.0f} MP);"
                         f" the limit is {MAX_STYLE_PIXELS // 1_000_000} MP")
    return read_image(path, ffmpeg)


def resize_long_side(image: torch.Tensor, long_side: int) -> torch.Tensor:
    """uint8 (H, W, 3) -> float (1, 3, h, w) in [0, 1] with max(h, w) == ``long_side``."""
    height, width = image.shape[:2]
    scale = long_side / max(height, width)
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    x = image.permute(2, 0, 1).unsqueeze(0).float() / 255.0
    return F.interpolate(x, size=size, mode="bilinear", antialias=True,
                         align_corners=False).clamp(0, 1)


def square_crop(image: torch.Tensor, side: int) -> torch.Tensor:
    """uint8 (H, W, 3) -> uint8 (side, side, 3): shorter side resized to ``side``, centre crop."""
    height, width = image.shape[:2]
    scale = side / min(height, width)
    size = (max(side, round(height * scale)), max(side, round(width * scale)))
    x = image.permute(2, 0, 1).unsqueeze(0).float()
    x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
    top, left = (size[0] - side) // 2, (size[1] - side) // 2
    x = x[0, :, top:top + side, left:left + side]
    return x.round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).contiguous()


def load_content(path: Path, side: int, ffmpeg: str | None = None) -> torch.Tensor:
    """Load the content set (see the module docstring) as uint8 (N, H, W, 3).

    Args:
        path: A packed ``.pt``/``.npy`` file or a directory of images.
        side: Square size for images read from a directory.

    Raises:
        ValueError: Empty set, wrong dtype or shape, or an unreadable image.
    """
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ValueError(f"{path}: no {'/'.join(IMAGE_SUFFIXES)} images in the content folder")
        return torch.stack([square_crop(read_image(file, ffmpeg), side) for file in files])
    if path.suffix == ".npy":
        images = torch.from_numpy(np.load(path))
    elif path.suffix == ".pt":
        images = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(images, torch.Tensor):
            raise ValueError(f"{path}: expected one uint8 tensor, found {type(images).__name__}")
    elif not path.exists():
        raise ValueError(f"{path}: content set not found")
    else:
        raise ValueError(f"{path}: content must be a .pt/.npy uint8 tensor or an image folder")
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[-1] != 3 or not len(images):
        raise ValueError(f"{path}: expected a uint8 tensor (N, H, W, 3) with N > 0, found "
                         f"{images.dtype} {tuple(images.shape)}")
    return images.contiguous()
