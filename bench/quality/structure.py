"""Structure score: does the painted frame keep the shapes of the input frame?

Two terms on the luminance, each a Pearson correlation between input and output over the
whole frame, and the score is the lower of them (1: the same picture, 0: nothing in common):

* Outline (:func:`outline_score`): the gradient magnitudes of the luminance blurred by a
  Gaussian of sigma = height / 100. Strokes finer than a hundredth of the frame do not count;
  the outlines of people, animals and objects do.
* Tone (:func:`tone_score`): the luminance itself, blurred by sigma = height / 400, so features
  a few pixels across at 720p (eyes, a mouth, text) count, with their sign: a white face with a
  dark mouth must stay light with a dark mouth.

Why, from docs/sheets/strength_the_scream.jpg at 720p: at strength 0.5 the bunny keeps its
outline but its white face becomes a dark blob, its open mouth a smear, and in the other frames
the leg, the wall and the path go dark on orange; Gatys keeps them. Outline alone passed that
(0.68-0.81, over 0.9x Gatys' 0.72-0.84); tone gives 0.57, 0.20 and 0.18 against Gatys'
0.92-0.95, and 0.87-0.94 at 0.4, where face, leg and walkers are back. On the other five
styles tone is at least 0.9x Gatys' wherever outline is, so their defaults stay. Rejected: a
finer gradient term (sigma = height / 400). Frame-wide it is dominated by grass and foliage
texture, which our networks keep and Gatys repaints, so Gatys scores lower (0.50 on the bunny,
ours 0.64 at 0.5) and the bar drops. Tone also follows perception: faces in a photographic
negative are hard to recognize though every outline is kept.
"""

from __future__ import annotations

import cv2
import numpy as np

OUTLINE_BLUR_FRACTION = 1 / 100
TONE_BLUR_FRACTION = 1 / 400
LUMA = np.array([0.2126, 0.7152, 0.0722], dtype=np.float32)
METRIC = ("min(outline: Pearson of luminance gradient magnitudes blurred at sigma=h/100, "
          "tone: Pearson of luminance blurred at sigma=h/400)")


def _blurred_luminance(rgb: np.ndarray, fraction: float) -> np.ndarray:
    """Luminance of a uint8 or [0, 1] float RGB image, blurred by sigma = height * fraction."""
    image = rgb.astype(np.float32)
    if rgb.dtype == np.uint8:
        image /= 255
    sigma = max(rgb.shape[0] * fraction, 0.5)
    return cv2.GaussianBlur(image @ LUMA, (0, 0), sigmaX=sigma, sigmaY=sigma,
                            borderType=cv2.BORDER_REFLECT)


def _edges(rgb: np.ndarray) -> np.ndarray:
    """Gradient magnitude of the luminance blurred at the outline scale."""
    blurred = _blurred_luminance(rgb, OUTLINE_BLUR_FRACTION)
    dx = cv2.Sobel(blurred, cv2.CV_32F, 1, 0, ksize=3, borderType=cv2.BORDER_REFLECT)
    dy = cv2.Sobel(blurred, cv2.CV_32F, 0, 1, ksize=3, borderType=cv2.BORDER_REFLECT)
    return np.sqrt(dx * dx + dy * dy)


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel() - a.mean(), b.ravel() - b.mean()
    denominator = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / denominator) if denominator > 0 else 0.0


def _check_shapes(source: np.ndarray, painted: np.ndarray) -> None:
    if source.shape != painted.shape:
        raise ValueError(f"shapes differ: {source.shape} vs {painted.shape}")


def outline_score(source: np.ndarray, painted: np.ndarray) -> float:
    """Correlation of the two images' blurred-luminance gradient magnitudes, in [-1, 1]."""
    _check_shapes(source, painted)
    return _pearson(_edges(source), _edges(painted))


def tone_score(source: np.ndarray, painted: np.ndarray) -> float:
    """Correlation of the two images' finely blurred luminance, in [-1, 1]."""
    _check_shapes(source, painted)
    return _pearson(_blurred_luminance(source, TONE_BLUR_FRACTION),
                    _blurred_luminance(painted, TONE_BLUR_FRACTION))


def structure_terms(source: np.ndarray, painted: np.ndarray) -> dict[str, float]:
    """``{"structure": the score, "outline": ..., "tone": ...}`` for reports that show both."""
    outline, tone = outline_score(source, painted), tone_score(source, painted)
    return {"structure": min(outline, tone), "outline": outline, "tone": tone}


def structure_score(source: np.ndarray, painted: np.ndarray) -> float:
    """The lower of the outline and tone scores, in [-1, 1]."""
    return structure_terms(source, painted)["structure"]
