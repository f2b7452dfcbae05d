"""bench.quality.gatys.images: the lossless image cache, its file names and its frame sizes."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from bench.quality.gatys import images
from bench.quality.inputs import read_rgb

RECORD = {"wall_seconds": 1.0, "optimise_seconds": 0.5, "concurrent_processes": 1,
          "date": "d", "device": "cpu"}


def noisy_image(seed: int = 0, size: tuple[int, int] = (36, 64)) -> np.ndarray:
    """Noise: the kind of image a lossy codec would change."""
    return np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)


def test_a_cached_image_is_lossless_webp_named_by_its_key(tmp_path: Path) -> None:
    key = images.image_key("udnie", "clip_1s", (36, 64), "abc")
    image = noisy_image()
    path = images.write_cached(tmp_path, key, image, RECORD)
    assert path == images.image_path(tmp_path, key)
    assert path.name.startswith("udnie__clip_1s__36p__") and path.suffix == ".webp"
    assert path.read_bytes()[8:12] == b"WEBP"
    assert json.loads(path.with_suffix(".json").read_text()) == {"key": key, **RECORD}
    cached, record = images.read_cached(tmp_path, key)
    assert np.array_equal(cached, image)  # every pixel, not close
    assert record["key"] == key
    assert images.find_image(tmp_path, "udnie", "clip_1s", 36) == path
    assert images.find_image(tmp_path, "udnie", "clip_1s", 1080) is None


def test_an_older_png_cache_is_still_read_but_webp_wins(tmp_path: Path) -> None:
    key = images.image_key("udnie", "clip_1s", (36, 64), "abc")
    png = images.image_path(tmp_path, key).with_suffix(".png")
    old = noisy_image(1)
    cv2.imwrite(str(png), cv2.cvtColor(old, cv2.COLOR_RGB2BGR))
    png.with_suffix(".json").write_text(json.dumps({"key": key, **RECORD}))
    assert np.array_equal(images.read_cached(tmp_path, key)[0], old)
    assert images.find_image(tmp_path, "udnie", "clip_1s", 36) == png
    new = noisy_image(2)
    webp = images.write_cached(tmp_path, key, new, RECORD)
    assert np.array_equal(images.read_cached(tmp_path, key)[0], new)
    assert images.find_image(tmp_path, "udnie", "clip_1s", 36) == webp


def test_a_record_of_another_key_or_without_an_image_is_not_a_hit(tmp_path: Path) -> None:
    key = images.image_key("udnie", "clip_1s", (36, 64), "abc")
    path = images.write_cached(tmp_path, key, noisy_image(), RECORD)
    path.with_suffix(".json").write_text(json.dumps({"key": {**key, "gatys_steps": 1},
                                                     **RECORD}))
    assert images.read_cached(tmp_path, key) is None
    path.with_suffix(".json").write_text(json.dumps({"key": key, **RECORD}))
    path.unlink()
    assert images.read_cached(tmp_path, key) is None


def test_frames_shrink_to_the_height_but_are_never_enlarged() -> None:
    frame = noisy_image(size=(72, 128))
    assert images.frame_at_height(frame, 72) is frame
    assert images.frame_at_height(frame, 36).shape == (36, 64, 3)
    with pytest.raises(ValueError, match="72 px high, below --height 108: frames are never"):
        images.frame_at_height(frame, 108)


def test_the_cli_refuses_a_height_above_the_frames_before_any_run(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    frames, styles, cache = tmp_path / "frames", tmp_path / "styles", tmp_path / "cache"
    frames.mkdir()
    styles.mkdir()
    cv2.imwrite(str(frames / "clip_1s.png"), noisy_image())
    cv2.imwrite(str(styles / "udnie.png"), noisy_image(3))
    with pytest.raises(SystemExit):
        images.main(["--frames", str(frames), "--frame-names", "clip_1s", "--styles-dir",
                     str(styles), "--styles", "udnie", "--cache", str(cache), "--height", "1080",
                     "--device", "cpu"])
    assert "clip_1s.png: frame is 36 px high, below --height 1080" in capsys.readouterr().err
    assert not cache.exists()


def test_read_rgb_reads_the_cache_format(tmp_path: Path) -> None:
    image = noisy_image(4)
    path = tmp_path / "x.webp"
    path.write_bytes(images.encode_lossless(image, path.name))
    assert np.array_equal(read_rgb(path), image)
