"""The shipped style manifest: every listed style loads and carries its provenance and metrics."""

from __future__ import annotations

import pytest
import torch

from gpu.model import load_style_model, read_metadata
from tasks.styles import MANIFEST_PATH, SHIPPED_DIR, shipped_manifest

REQUIRED = {"name", "file", "painting", "painter", "year", "arch", "training", "metrics"}


def test_manifest_lists_loadable_models_with_provenance_and_metrics() -> None:
    entries = shipped_manifest()
    if not entries:
        pytest.fail(f"{MANIFEST_PATH} lists no style: make demo needs at least one")
    for entry in entries:
        assert entry.keys() >= REQUIRED, f"{entry.get('name')}: missing {REQUIRED - entry.keys()}"
        weights = SHIPPED_DIR / entry["file"]
        assert weights.stat().st_size <= 4 * 1024 * 1024
        assert read_metadata(weights)["style"] == entry["name"]
        model = load_style_model(weights)
        frame = torch.rand(1, 3, 37, 53)
        with torch.inference_mode():
            out = model(frame)
        assert out.shape == frame.shape
        assert float((out - frame).abs().mean()) > 0.02  # it changes the picture
        for key in ("steps", "losses", "seconds", "device_name"):
            assert key in entry["metrics"], f"{entry['name']}: metrics lack {key}"
        assert {"content", "style"} <= entry["metrics"]["losses"].keys()


def test_weights_are_fp16() -> None:
    from safetensors.torch import load_file

    for entry in shipped_manifest():
        tensors = load_file(str(SHIPPED_DIR / entry["file"]))
        assert {t.dtype for t in tensors.values()} == {torch.float16}
