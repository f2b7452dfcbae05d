"""Tiny real inputs for the quality report's tests: textures, a content folder, seeded models."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import cv2
import imageio_ffmpeg
import numpy as np
import torch

from gpu.model import build_model, save_weights


def smooth_texture(seed: int, size: int = 220) -> np.ndarray:
    """A blurred random RGB texture: enough structure everywhere for optical flow."""
    noise = (np.random.default_rng(seed).random((size, size, 3)) * 255).astype(np.uint8)
    return cv2.normalize(cv2.GaussianBlur(noise, (0, 0), 2.0), None, 0, 255, cv2.NORM_MINMAX)


def make_content(root: Path) -> Path:
    """A tiny content folder in tools/assemble_content.py's layout, made with ffmpeg and cv2."""
    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    (root / "heldout").mkdir(parents=True)
    (root / "clips").mkdir()
    for index in range(3):
        cv2.imwrite(str(root / "heldout" / f"frame{index}.png"), smooth_texture(10 + index, 96))
    for name, source in (("moving", "testsrc2=size=96x64:rate=10:duration=0.6"),
                         ("still", "smptebars=size=80x64:rate=10:duration=0.6")):
        subprocess.run([ffmpeg, "-v", "error", "-f", "lavfi", "-i", source, "-pix_fmt", "yuv420p",
                        "-c:v", "libx264", str(root / "clips" / f"{name}.mp4")], check=True)
    return root


def save_tiny_model(path: Path, arch: str, temporal_weight: float, **hparams: int) -> None:
    """A seeded untrained model with the metadata training writes."""
    torch.manual_seed(0)
    save_weights(build_model(arch, **hparams), path,
                 extra={"style": "texture",
                        "training": json.dumps({"arch": arch, "content_layer": "relu4_2",
                                                "temporal_weight": temporal_weight})})
