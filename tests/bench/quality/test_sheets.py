"""bench.quality.sheets: contact sheets stay within their size."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from bench.quality import sheets


def test_write_jpeg_within_shrinks_until_it_fits(tmp_path: Path) -> None:
    noise = (np.random.default_rng(5).random((600, 800, 3)) * 255).astype(np.uint8)
    size = sheets.write_jpeg_within(tmp_path / "sheet.jpg", noise, max_bytes=300_000)
    assert (tmp_path / "sheet.jpg").read_bytes()[:2] == b"\xff\xd8"  # a JPEG
    written = cv2.imread(str(tmp_path / "sheet.jpg"))
    assert size == (tmp_path / "sheet.jpg").stat().st_size <= 300_000
    assert written.shape[1] < 800 and written.shape[1] / written.shape[0] == pytest.approx(
        800 / 600, rel=0.01)


def test_a_sheet_keeps_its_picture_within_jpeg_loss(tmp_path: Path) -> None:
    smooth = np.zeros((120, 160, 3), np.uint8)
    smooth[:, :, 0] = np.linspace(0, 255, 160, dtype=np.uint8)
    smooth[40:80, 50:110] = (30, 200, 90)
    sheets.write_jpeg_within(tmp_path / "sheet.jpg", smooth)
    written = cv2.cvtColor(cv2.imread(str(tmp_path / "sheet.jpg")), cv2.COLOR_BGR2RGB)
    assert written.shape == smooth.shape
    assert np.abs(written.astype(int) - smooth).mean() < 3


def test_a_sheet_must_be_named_as_jpeg(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="name it .jpg"):
        sheets.write_jpeg_within(tmp_path / "sheet.png", np.zeros((8, 8, 3), np.uint8))
    assert not list(tmp_path.iterdir())
