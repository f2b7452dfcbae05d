"""bench.quality.sheets: contact sheets stay within their size."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from bench.quality import sheets


def test_write_png_within_shrinks_until_it_fits(tmp_path: Path) -> None:
    noise = (np.random.default_rng(5).random((600, 800, 3)) * 255).astype(np.uint8)
    size = sheets.write_png_within(tmp_path / "sheet.png", noise, max_bytes=300_000)
    written = cv2.imread(str(tmp_path / "sheet.png"))
    assert size == (tmp_path / "sheet.png").stat().st_size <= 300_000
    assert written.shape[1] < 800 and written.shape[1] / written.shape[0] == pytest.approx(
        800 / 600, rel=0.01)
