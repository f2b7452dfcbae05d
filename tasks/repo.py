"""Where this checkout lives: the one definition of the repository root for tasks/, bench/ and
tools/ (standard library only, so the benchmarks import it on a GPU host too). gpu/ never needs
it: the GPU job is given every path it reads."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
SHIPPED_STYLES_DIR = REPO_ROOT / "gpu" / "styles"
"""The style networks shipped with the code (``<style>.safetensors``)."""
