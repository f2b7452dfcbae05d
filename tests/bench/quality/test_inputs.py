"""bench.quality.inputs: images in RGB order, even spreads, baselines by file stem."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from bench.quality import inputs
from gpu.model import build_model, save_weights


def test_read_rgb_gives_rgb_order_and_names_a_bad_file(tmp_path: Path) -> None:
    bgr = np.zeros((4, 6, 3), np.uint8)
    bgr[..., 2] = 255  # pure red in OpenCV's BGR order
    cv2.imwrite(str(tmp_path / "red.png"), bgr)
    assert inputs.read_rgb(tmp_path / "red.png")[0, 0].tolist() == [255, 0, 0]
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="bad.png"):
        inputs.read_rgb(tmp_path / "bad.png")


def test_spread_picks_evenly_through_the_list() -> None:
    names = [f"f{i}" for i in range(8)]
    assert inputs.spread(names, 2) == ["f0", "f4"]
    assert inputs.spread(names, None) == names and inputs.spread(names, 20) == names
    assert inputs.spread(names, 0) == []


def test_find_baselines_keys_by_stem_and_skips_styles_not_reported(tmp_path: Path) -> None:
    for stem, style in (("a-johnson", "a"), ("b-no_temporal", "b")):
        save_weights(build_model("johnson", width=4, blocks=1), tmp_path / f"{stem}.safetensors",
                     extra={"style": style})
    usable, skipped = inputs.find_baselines(tmp_path, ["a"])
    assert usable == {"a-johnson": tmp_path / "a-johnson.safetensors"}
    assert list(skipped) == ["b-no_temporal"] and "'b'" in skipped["b-no_temporal"]
    with pytest.raises(ValueError, match="a-johnson"):
        inputs.find_baselines(tmp_path, ["a", "a-johnson"])
    with pytest.raises(FileNotFoundError):
        inputs.find_baselines(tmp_path / "empty", ["a"])
