"""Gatys et al.'s optimisation, run by pastiche's CLI in a process of its own per image."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from bench.quality.inputs import read_rgb

# Threads per pooled pastiche process: a pool of 8 then fills, and does not oversubscribe, the
# 16 cores of the GPU machine (PyTorch otherwise starts a thread per core in every process).
POOLED_PASTICHE_THREADS = 2
PASTICHE_PROGRESS = re.compile(r"^(\d+)\s+(\d+(?:\.\d+)?)\s+\S+\s*$", re.MULTILINE)


def pastiche_argv(python: str, content: Path, style: Path, output: Path, steps: int, size: int,
                  style_size: int, device: str, seed: int = 0) -> list[str]:
    """pastiche's CLI: L-BFGS from the content image, its default Gatys weights and layers."""
    return [python, "-m", "pastiche", "--device", device, "--seed", str(seed),
            "--optimizer", "lbfgs", "--num-steps", str(steps), "--info-step", str(steps),
            "--size", str(size), "--style-size", str(style_size),
            "--content", str(content), "--styles", str(style), "--output", str(output)]


def pastiche_optimisation_seconds(stdout: str) -> float | None:
    """Seconds between pastiche's step-0 and last progress lines (setup time left out)."""
    elapsed = {int(step): float(seconds) for step, seconds in PASTICHE_PROGRESS.findall(stdout)}
    if 0 not in elapsed or len(elapsed) < 2:
        return None
    return elapsed[max(elapsed)] - elapsed[0]


def gatys_unavailable_reason() -> str | None:
    """Why pastiche cannot run here, or ``None`` when it can."""
    for module, hint in (("pastiche", "pastiche is not importable (put its wheel on PYTHONPATH)"),
                         ("PIL", "Pillow, which pastiche needs, is not importable")):
        if importlib.util.find_spec(module) is None:
            return hint
    return None


def pastiche_env(concurrent_processes: int) -> dict[str, str]:
    """Environment of a pastiche process: ours, with threads capped when it shares the machine.

    A run alone keeps every core, as a user running Gatys would, so its timing is not inflated.
    """
    env = os.environ.copy()
    if concurrent_processes > 1:
        env.setdefault("OMP_NUM_THREADS", str(POOLED_PASTICHE_THREADS))
    return env


def run_gatys(content: np.ndarray, style: np.ndarray, steps: int, device: str,
              concurrent_processes: int = 1) -> tuple[np.ndarray, dict[str, float | None]]:
    """Stylize ``content`` (uint8 (H, W, 3)) towards ``style`` (uint8) with pastiche.

    Both images are handed over as PNG, in a temporary folder of this run's own, at exactly the
    size they are given, so pastiche resizes nothing.

    Args:
        device: ``cuda`` or ``cpu``.
        concurrent_processes: how many pastiche processes run at once with this one (1: alone);
            it caps the process's threads and labels its timing.

    Returns:
        The output image and ``{"wall_seconds", "optimise_seconds", "concurrent_processes"}``.

    Raises:
        RuntimeError: pastiche failed; the message carries its output.
    """
    with tempfile.TemporaryDirectory(prefix="gatys-") as folder:
        content_file, style_file, output_file = (Path(folder) / name for name in
                                                 ("content.png", "style.png", "gatys.png"))
        for path, image in ((content_file, content), (style_file, style)):
            if not cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
                raise RuntimeError(f"could not write {path}")
        argv = pastiche_argv(sys.executable, content_file, style_file, output_file, steps,
                             max(content.shape[:2]), max(style.shape[:2]), device)
        started = time.perf_counter()
        result = subprocess.run(argv, capture_output=True, text=True,
                                env=pastiche_env(concurrent_processes))
        wall = time.perf_counter() - started
        if result.returncode != 0:
            raise RuntimeError(f"pastiche failed ({result.returncode}): {' '.join(argv)}\n"
                               f"{result.stdout[-2000:]}{result.stderr[-4000:]}")
        output = read_rgb(output_file)
    return output, {"wall_seconds": wall,
                    "optimise_seconds": pastiche_optimisation_seconds(result.stdout),
                    "concurrent_processes": concurrent_processes}
