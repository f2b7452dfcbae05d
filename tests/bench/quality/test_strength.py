"""bench.quality.structure and the default-strength rule of bench.quality.strength."""

from __future__ import annotations

import numpy as np
import pytest

from bench.quality.strength import STRUCTURE_GOAL, choose_default
from bench.quality.structure import structure_score


def scene(seed: int, size: tuple[int, int] = (180, 320)) -> np.ndarray:
    """Large shapes (discs and bars) on a background: the outlines the score is about."""
    rng = np.random.default_rng(seed)
    height, width = size
    image = np.full((height, width, 3), rng.integers(0, 256, 3), dtype=np.uint8)
    ys, xs = np.mgrid[:height, :width]
    for _ in range(6):
        cy, cx, r = rng.integers(0, height), rng.integers(0, width), rng.integers(15, 50)
        image[(ys - cy) ** 2 + (xs - cx) ** 2 < r * r] = rng.integers(0, 256, 3)
    return image


def test_identical_images_score_one() -> None:
    image = scene(0)
    assert structure_score(image, image) == pytest.approx(1.0, abs=1e-6)


def test_unrelated_images_score_near_zero() -> None:
    scores = [structure_score(scene(seed), scene(seed + 100)) for seed in range(5)]
    assert abs(float(np.mean(scores))) < 0.15


def test_colour_changes_keep_the_shapes_and_fine_noise_is_blurred_away() -> None:
    image = scene(1)
    recoloured = 255 - image  # every colour changed, every outline kept
    assert structure_score(image, recoloured) > 0.95
    noisy = np.clip(image + np.random.default_rng(2).normal(0, 20, image.shape), 0, 255)
    assert structure_score(image, noisy.astype(np.uint8)) > 0.9


def test_shapes_painted_over_score_low() -> None:
    image = scene(3)
    flat = np.full_like(image, 128)
    flat[::8] = 255  # stripes: texture everywhere, none of the shapes
    assert structure_score(image, flat) < 0.3


def test_structure_refuses_images_of_different_sizes() -> None:
    with pytest.raises(ValueError, match="shapes differ"):
        structure_score(scene(0), scene(0, (90, 160)))


def test_default_is_the_strongest_strength_that_keeps_structure_on_every_frame() -> None:
    gatys = [0.8, 0.7]
    rows = {0.25: [0.95, 0.9], 0.5: [0.75, 0.65], 0.75: [0.6, 0.7]}
    # 0.5 fits frame 1 (0.75 >= 0.72) and frame 2 (0.65 >= 0.63); 0.75 fails frame 1.
    assert choose_default(rows, gatys) == 0.5
    assert STRUCTURE_GOAL == 0.9


def test_no_default_when_no_strength_keeps_structure() -> None:
    assert choose_default({0.0: [0.5]}, [0.9]) is None
