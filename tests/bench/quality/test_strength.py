"""bench.quality.strength: the default-strength rule, reusing losses, the sheets (the score
itself: test_structure.py)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from bench.quality.inputs import read_rgb
from bench.quality.strength import (
    GRID,
    OUTLINE_ONLY,
    SHEET_TILE_WIDTH,
    STRUCTURE_GOAL,
    choose_default,
    main,
    ramp_sheet,
    reused_losses,
)
from bench.quality.structure import METRIC, structure_score
from gpu.model import build_model, save_weights


def test_default_is_the_strongest_strength_that_keeps_structure_on_every_frame() -> None:
    gatys = [0.8, 0.7]
    rows = {0.25: [0.95, 0.9], 0.5: [0.75, 0.65], 0.75: [0.6, 0.7]}
    # 0.5 fits frame 1 (0.75 >= 0.72) and frame 2 (0.65 >= 0.63); 0.75 fails frame 1.
    assert choose_default(rows, gatys) == 0.5
    assert STRUCTURE_GOAL == 0.9


def test_no_default_when_no_strength_keeps_structure() -> None:
    assert choose_default({0.0: [0.5]}, [0.9]) is None


def tiny_report_inputs(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A tiny conditioned style, one 36x64 frame and its cached 'Gatys' image."""
    torch.manual_seed(0)
    model = build_model("stylenet", width=8, blocks=1, head_width=8, conditioned=True)
    models, frames, cache = tmp_path / "models", tmp_path / "frames", tmp_path / "cache"
    for folder in (models, frames, cache):
        folder.mkdir()
    save_weights(model, models / "tiny.safetensors", {"style": "tiny"})
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (36, 64, 3), dtype=np.uint8)
    cv2.imwrite(str(frames / "clip_1s.png"), frame)
    cv2.imwrite(str(cache / "tiny__clip_1s__36p__abc.png"), 255 - frame)
    return models, frames, cache


def earlier_report(structure: float) -> dict:
    """A report of the outline-only kind: losses and structure for every column of the grid."""
    def column(i: int) -> dict[str, float]:
        return {"content_loss": 10.0 + i, "style_loss": 20.0 + i, "structure": structure}
    return {"grid": list(GRID), "styles": {"tiny": {"frames": {"clip_1s": {
        "gatys": column(-1), "ours": {str(s): column(i) for i, s in enumerate(GRID)}}}}}}


def test_a_rerun_reuses_the_losses_and_rescores_structure(tmp_path: Path) -> None:
    models, frames, cache = tiny_report_inputs(tmp_path)
    reused = tmp_path / "earlier.json"
    reused.write_text(json.dumps(earlier_report(structure=0.5)))
    out, sheets = tmp_path / "report.json", tmp_path / "sheets"
    sheets.mkdir()
    report = main(["--models-dir", str(models), "--frames", str(frames), "--gatys-cache",
                   str(cache), "--json-out", str(out), "--sheets-dir", str(sheets),
                   "--reuse-style-losses", str(reused)])
    assert json.loads(out.read_text()) == report
    assert report["style_losses_from"] == str(reused)
    assert report["structure_metric"] == METRIC
    assert "--reuse-style-losses" in report["command"]
    record = report["styles"]["tiny"]["frames"]["clip_1s"]
    assert record["gatys"]["style_loss"] == 19.0
    assert record["ours"]["0.25"]["content_loss"] == 11.0
    frame = read_rgb(frames / "clip_1s.png")
    assert record["gatys"]["structure"] == pytest.approx(structure_score(frame, 255 - frame))
    assert record["gatys"]["tone"] < 0  # a negative keeps outlines, not the picture
    for terms in record["ours"].values():
        assert terms["structure"] == min(terms["outline"], terms["tone"])
    # The earlier report's structure (0.5) was not this one's outline term: the check says so.
    assert report["outline_vs_reused_structure_max_abs_diff"] > 0
    assert report["reused_report"] == {"structure_metric": OUTLINE_ONLY,
                                       "default_strength": {"tiny": None}}
    # Frame, five ramp strengths, the default, Gatys: eight 384-wide tiles.
    sheet = read_rgb(sheets / "strength_tiny.jpg")
    assert report["styles"]["tiny"]["default_strength"] is not None
    assert sheet.shape[1] == 8 * SHEET_TILE_WIDTH


def test_reused_losses_refuse_another_grid_or_a_missing_image() -> None:
    report = earlier_report(structure=0.5)
    losses = reused_losses(report, "earlier.json", "tiny")
    blank = np.zeros((4, 4, 3), np.uint8)
    assert losses("clip_1s", "1.0", blank, blank) == {"content_loss": 17.0, "style_loss": 27.0}
    with pytest.raises(ValueError, match="earlier.json has no losses for tiny, clip_9s, gatys"):
        losses("clip_9s", "gatys", blank, blank)
    with pytest.raises(ValueError, match="has no losses for other"):
        reused_losses(report, "earlier.json", "other")("clip_1s", "gatys", blank, blank)
    with pytest.raises(ValueError, match="measured on the grid"):
        reused_losses({**report, "grid": [0.0, 1.0]}, "earlier.json", "tiny")


def test_the_sheet_shows_the_default_even_off_the_ramp() -> None:
    frame = np.zeros((36, 64, 3), np.uint8)
    ours = {s: np.full_like(frame, round(200 * s)) for s in GRID}
    sheet = ramp_sheet([(frame, ours, np.full_like(frame, 255))], default=0.4)
    tiles = np.split(sheet, 8, axis=1)
    assert [int(t[0, 0, 0]) for t in tiles] == [0, 0, 50, 100, 150, 200, 80, 255]
    assert ramp_sheet([(frame, ours, frame)], default=None).shape[1] == 7 * SHEET_TILE_WIDTH


def test_candidates_are_reported_by_file_and_judged_against_their_style(tmp_path: Path) -> None:
    models, frames, cache = tiny_report_inputs(tmp_path)
    torch.manual_seed(1)
    candidate = build_model("stylenet", width=8, blocks=1, head_width=8, conditioned=True)
    save_weights(candidate, models / "tiny-candidate.safetensors", {"style": "tiny"})
    earlier = earlier_report(structure=0.5)
    earlier["styles"]["tiny-candidate"] = earlier["styles"]["tiny"]
    reused = tmp_path / "earlier.json"
    reused.write_text(json.dumps(earlier))
    report = main(["--models-dir", str(models), "--frames", str(frames), "--gatys-cache",
                   str(cache), "--json-out", str(tmp_path / "report.json"),
                   "--reuse-style-losses", str(reused), "--stroke-scale", "2"])
    shipped, other = report["styles"]["tiny"], report["styles"]["tiny-candidate"]
    assert other["style"] == shipped["style"] == "tiny"
    # The same Gatys image judges both; the two networks paint differently.
    assert other["frames"]["clip_1s"]["gatys"] == shipped["frames"]["clip_1s"]["gatys"]
    assert other["frames"]["clip_1s"]["ours"] != shipped["frames"]["clip_1s"]["ours"]
    assert report["stroke_scale"] == 2.0
    with pytest.raises(ValueError, match="stroke scale must be within"):
        main(["--models-dir", str(models), "--frames", str(frames), "--json-out",
              str(tmp_path / "bad.json"), "--stroke-scale", "9"])
