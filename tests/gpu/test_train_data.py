"""gpu/train_data.py without Pillow: image size and pixels from the FFmpeg layer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gpu import train_data


@pytest.fixture
def no_pillow(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(train_data, "_pillow", lambda: None)


def test_pixels_that_look_like_whitespace_survive_the_ppm_header(tmp_path: Path,
                                                                 no_pillow: None) -> None:
    """A PPM header ends in exactly one whitespace byte; pixel bytes after it may be any."""
    pixels = np.full((3, 5, 3), 0x0A, np.uint8)  # newline bytes
    pixels[0, 0] = (0x20, 0x09, 0x0D)  # space, tab, carriage return
    Image.fromarray(pixels).save(tmp_path / "blank.png")
    assert torch.equal(train_data.read_image(tmp_path / "blank.png"), torch.from_numpy(pixels))
    assert train_data.image_size(tmp_path / "blank.png") == (5, 3)


def test_unreadable_images_are_refused_with_their_name(tmp_path: Path, no_pillow: None) -> None:
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(train_data.ImageError, match="notes.png: not a readable image"):
        train_data.image_size(tmp_path / "notes.png")
    with pytest.raises(train_data.ImageError, match="missing.png: not a readable image"):
        train_data.read_image(tmp_path / "missing.png")
