"""bench.quality.structure: the outline and tone terms and the score that takes the lower."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from bench.quality.structure import outline_score, structure_score, structure_terms, tone_score


def scene(seed: int, size: tuple[int, int] = (180, 320)) -> np.ndarray:
    """Large shapes (discs) on a background: the outlines the score is about."""
    rng = np.random.default_rng(seed)
    height, width = size
    image = np.full((height, width, 3), rng.integers(0, 256, 3), dtype=np.uint8)
    ys, xs = np.mgrid[:height, :width]
    for _ in range(6):
        cy, cx, r = rng.integers(0, height), rng.integers(0, width), rng.integers(15, 50)
        image[(ys - cy) ** 2 + (xs - cx) ** 2 < r * r] = rng.integers(0, 256, 3)
    return image


def face_scene(size: tuple[int, int] = (360, 640)) -> tuple[np.ndarray, np.ndarray]:
    """A white face with dark eyes and mouth on textured grass, and the face's mask."""
    height, width = size
    rng = np.random.default_rng(0)
    grass = 0.35 + 0.1 * rng.standard_normal((height, width))
    ys, xs = np.mgrid[:height, :width]
    face = (ys - height / 2) ** 2 + (xs - width / 2) ** 2 < (height * 0.3) ** 2
    luminance = np.where(face, 0.9, grass)
    for dx in (-0.06, 0.06):
        eye = (ys - height * 0.42) ** 2 + (xs - width * (0.5 + dx)) ** 2 < (height * 0.03) ** 2
        luminance[eye] = 0.1
    mouth = (abs(ys - height * 0.62) < height * 0.03) & (abs(xs - width / 2) < width * 0.07)
    luminance[mouth] = 0.1
    return luminance, face


def to_rgb(luminance: np.ndarray) -> np.ndarray:
    return (np.clip(np.repeat(luminance[..., None], 3, 2), 0, 1) * 255).round().astype(np.uint8)


def test_identical_images_score_one() -> None:
    image = scene(0)
    assert structure_score(image, image) == pytest.approx(1.0, abs=1e-6)
    assert structure_terms(image, image) == pytest.approx(
        {"structure": 1.0, "outline": 1.0, "tone": 1.0}, abs=1e-6)


def test_unrelated_images_score_near_zero() -> None:
    for score in (structure_score, outline_score, tone_score):
        scores = [score(scene(seed), scene(seed + 100)) for seed in range(5)]
        assert abs(float(np.mean(scores))) < 0.15, score.__name__


def test_a_colour_cast_and_fine_noise_keep_the_picture() -> None:
    image = scene(1)
    cast = np.clip(0.7 * image + np.array([60, 20, 0]), 0, 255).astype(np.uint8)
    assert structure_score(image, cast) > 0.99
    noisy = np.clip(image + np.random.default_rng(2).normal(0, 20, image.shape), 0, 255)
    assert outline_score(image, noisy.astype(np.uint8)) > 0.9  # blurred away at that scale
    assert structure_score(image, noisy.astype(np.uint8)) > 0.85


def test_a_negative_keeps_every_outline_but_not_the_picture() -> None:
    image = scene(1)
    negative = 255 - image
    assert outline_score(image, negative) > 0.95
    assert tone_score(image, negative) < -0.95
    assert structure_score(image, negative) == tone_score(image, negative)


def test_a_face_painted_into_a_dark_silhouette_scores_clearly_lower_than_its_outline() -> None:
    """What the_scream did at strength 0.5: outline kept, white face and its features gone."""
    luminance, face = face_scene()
    silhouette = luminance.copy()
    silhouette[face] = 0.25
    ring = face & ~cv2.erode(face.astype(np.uint8), np.ones((13, 13), np.uint8)).astype(bool)
    silhouette[ring] = 0.9  # a bright rim where the outline was
    source, painted = to_rgb(luminance), to_rgb(silhouette)
    terms = structure_terms(source, painted)
    assert terms["outline"] > 0.3  # the old, outline-only score sees a fair share of the shape
    assert terms["structure"] < terms["outline"] - 0.3
    assert terms["structure"] < 0.1


def test_shapes_painted_over_score_low() -> None:
    image = scene(3)
    flat = np.full_like(image, 128)
    flat[::8] = 255  # stripes: texture everywhere, none of the shapes
    assert structure_score(image, flat) < 0.3


def test_structure_refuses_images_of_different_sizes() -> None:
    for score in (structure_score, outline_score, tone_score):
        with pytest.raises(ValueError, match="shapes differ"):
            score(scene(0), scene(0, (90, 160)))
