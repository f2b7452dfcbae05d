"""Structure score: does the painted frame keep the shapes of the input frame?

The Pearson correlation between the gradient magnitudes of the input's and the output's
luminance, each taken on the luminance blurred by a Gaussian of sigma = height / 100. The blur
sets the scale at frame level: brush strokes finer than about a hundredth of the frame's height
do not count, the outlines of people, animals and objects do. 1 means the same shapes, 0 none
of them. A content loss at VGG relu4_2 does not see shapes the style has painted over; this
score does, and it follows what a person sees on the sheets (docs/quality.md).
"""

from __future__ import annotations

import cv2
import numpy as np

BLUR_FRACTION = 1 / 100
LUMA = np.array([0.2126, 0.7152, 0.0722], dtype=np.float32)


def _edges(rgb: np.ndarray) -> np.ndarray:
    """Gradient magnitude of the blurred luminance of a uint8 or [0, 1] float RGB image."""
    image = rgb.astype(np.float32)
    if rgb.dtype == np.uint8:
        image /= 255
    luminance = image @ LUMA
    sigma = max(rgb.shape[0] * BLUR_FRACTION, 0.5)
    blurred = cv2.GaussianBlur(luminance, (0, 0), sigmaX=sigma, sigmaY=sigma,
                               borderType=cv2.BORDER_REFLECT)
    dx = cv2.Sobel(blurred, cv2.CV_32F, 1, 0, ksize=3, borderType=cv2.BORDER_REFLECT)
    dy = cv2.Sobel(blurred, cv2.CV_32F, 0, 1, ksize=3, borderType=cv2.BORDER_REFLECT)
    return np.sqrt(dx * dx + dy * dy)


def structure_score(source: np.ndarray, painted: np.ndarray) -> float:
    """Correlation of the two images' blurred-luminance gradient magnitudes, in [-1, 1]."""
    if source.shape != painted.shape:
        raise ValueError(f"shapes differ: {source.shape} vs {painted.shape}")
    a, b = _edges(source).ravel(), _edges(painted).ravel()
    a, b = a - a.mean(), b - b.mean()
    denominator = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / denominator) if denominator > 0 else 0.0
