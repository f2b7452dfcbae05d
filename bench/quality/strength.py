"""Strength report: structure and style of every style network across strengths, against Gatys.

For each style and each held-out 720p frame that has a cached Gatys image
(:mod:`bench.quality.gatys`), the frame is painted through the GPU job's own path
(:func:`gpu.controls.paint`, at ``--stroke-scale``) at a grid of strengths and scored with the
structure score (:mod:`bench.quality.structure`) and training's Gram style loss at the frame's
size; Gatys' image is scored the same way. The same frames enlarged to 1080p are painted too,
to show that the stroke scale looks the same there. Each ``*.safetensors`` of ``--models-dir``
is reported under its file name and judged against the style its metadata names, so candidate
networks of one style can sit side by side. ``--device cuda`` paints and runs VGG on the GPU.

Style and content losses do not depend on the structure score, so ``--reuse-style-losses
REPORT`` takes them from an earlier report of the same grid and frames instead of running VGG
(a CPU-friendly rerun after the score changes); the report says so under ``style_losses_from``.
When that report scored structure with the outline term alone, each image's outline term here
must match its structure there, which shows that the same images were painted; the largest
difference is recorded. REPORT may be the ``--json-out`` file itself: it is read before it is
replaced, and its metric and defaults stay under ``reused_report``.

The default strength of a style is the highest strength of the grid whose structure is at
least :data:`STRUCTURE_GOAL` of Gatys' on every frame: the picture keeps its subject. Its style
loss ratio to Gatys' is reported against :data:`STYLE_GOAL`, met or not. A sheet per style is
written as JPEG (``strength_<style>.jpg``), a row per frame: the frame, strengths 0, 0.25, 0.5,
0.75 and 1, the default strength (which need not be on that ramp), then Gatys.

    python -m bench.quality.strength --models-dir gpu/styles --gatys-cache bench/gatys_images \
        --frames .carry/content/heldout_720p --json-out docs/strength.json --sheets-dir docs/sheets
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch

from bench.quality.gatys.images import find_image
from bench.quality.inputs import DEFAULT_STYLE_DIRS, model_settings, read_rgb
from bench.quality.metrics import perceptual_losses, style_targets
from bench.quality.sheets import write_jpeg_within
from bench.quality.structure import METRIC, structure_score, structure_terms
from gpu import controls
from gpu.jobdir import atomic_write_json
from gpu.model import load_style_model

STRUCTURE_GOAL = 0.9
STYLE_GOAL = 1.5
GRID = (0.0, 0.25, 0.35, 0.4, 0.45, 0.5, 0.75, 1.0)
RAMP = (0.0, 0.25, 0.5, 0.75, 1.0)
SHEET_TILE_WIDTH = 384
CPU = torch.device("cpu")
# What reports written before the tone term called structure.
OUTLINE_ONLY = "outline: Pearson of luminance gradient magnitudes blurred at sigma=h/100"

# (frame name, "gatys" or a strength of the grid, painted image, source frame) -> losses
LossFunction = Callable[[str, str, np.ndarray, np.ndarray], dict[str, float]]


def to_tensor(image: np.ndarray, device: torch.device = CPU) -> torch.Tensor:
    return torch.from_numpy(image).to(device).permute(2, 0, 1)[None].float() / 255


def to_image(frames: torch.Tensor) -> np.ndarray:
    return (frames[0].clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)


def painted(model: torch.nn.Module, frame: np.ndarray, strength: float,
            stroke_scale: float = 1.0) -> np.ndarray:
    model.set_strength(strength)
    device = next(model.parameters()).device
    with torch.no_grad():
        return to_image(controls.paint(model, to_tensor(frame, device),
                                       stroke_scale=stroke_scale))


def gatys_image(cache: Path, style: str, frame: str, height: int) -> np.ndarray | None:
    found = find_image(cache, style, frame, height)
    return read_rgb(found) if found else None


def choose_default(rows: dict[float, list[float]], gatys: list[float]) -> float | None:
    """The highest strength whose structure is at least the goal's share of Gatys' everywhere."""
    fitting = [s for s, scores in rows.items()
               if all(ours >= STRUCTURE_GOAL * theirs for ours, theirs in
                      zip(scores, gatys, strict=True))]
    return max(fitting) if fitting else None


def measured_losses(style: str, model_path: Path, styles_dirs: list[Path],
                    device: torch.device = CPU) -> LossFunction:
    """Training's content and style losses at each image's own size."""
    target = style_targets({style: model_path}, styles_dirs, None, None, device)[style]
    return lambda _frame, _column, image, frame: perceptual_losses(target.criterion, image,
                                                                   frame, device)


def reused_losses(report: dict, label: str, style: str) -> LossFunction:
    """The losses an earlier ``report`` (of the same grid) measured on the same images."""
    if [float(s) for s in report.get("grid", [])] != list(GRID):
        raise ValueError(f"{label} was measured on the grid {report.get('grid')}, not {GRID}")

    def losses(frame_name: str, column: str, _image: np.ndarray, _frame: np.ndarray
               ) -> dict[str, float]:
        try:
            record = report["styles"][style]["frames"][frame_name]
            measured = record["gatys"] if column == "gatys" else record["ours"][column]
            return {"content_loss": measured["content_loss"],
                    "style_loss": measured["style_loss"]}
        except KeyError:
            raise ValueError(f"{label} has no losses for {style}, {frame_name}, {column}"
                             ) from None
    return losses


def evaluate_style(style: str, model_path: Path, frames: dict[str, np.ndarray], cache: Path,
                   losses: LossFunction, stroke_scale: float = 1.0, device: torch.device = CPU
                   ) -> tuple[dict, np.ndarray | None]:
    model = load_style_model(model_path, device)
    entry: dict = {"model": str(model_path), "style": style, "frames": {}}
    sheet_rows: list[tuple[np.ndarray, dict[float, np.ndarray], np.ndarray]] = []
    for name, frame in frames.items():
        theirs = gatys_image(cache, style, name, frame.shape[0])
        if theirs is None:
            continue
        record = {"gatys": {**structure_terms(frame, theirs),
                            **losses(name, "gatys", theirs, frame)},
                  "ours": {}, "ours_1080p_structure": {}}
        ours = {}
        big = cv2.resize(frame, (frame.shape[1] * 3 // 2, frame.shape[0] * 3 // 2),
                         interpolation=cv2.INTER_CUBIC)
        for strength in GRID:
            image = painted(model, frame, strength, stroke_scale)
            record["ours"][str(strength)] = {**structure_terms(frame, image),
                                             **losses(name, str(strength), image, frame)}
            record["ours_1080p_structure"][str(strength)] = structure_score(
                big, painted(model, big, strength, stroke_scale))
            ours[strength] = image
        entry["frames"][name] = record
        sheet_rows.append((frame, ours, theirs))
    frames_done = list(entry["frames"].values())
    if frames_done:
        rows = {s: [f["ours"][str(s)]["structure"] for f in frames_done] for s in GRID}
        default = choose_default(rows, [f["gatys"]["structure"] for f in frames_done])
        entry["default_strength"] = default
        if default is not None:
            ratios = [f["ours"][str(default)]["style_loss"] / f["gatys"]["style_loss"]
                      for f in frames_done]
            structure = [f["ours"][str(default)]["structure"] / f["gatys"]["structure"]
                         for f in frames_done]
            entry["at_default"] = {
                "structure_vs_gatys": structure, "style_loss_vs_gatys": ratios,
                "structure_goal_met": min(structure) >= STRUCTURE_GOAL,
                "style_goal_met": max(ratios) <= STYLE_GOAL}
    default = entry.get("default_strength")
    return entry, (ramp_sheet(sheet_rows, default) if sheet_rows else None)


def ramp_sheet(rows: list[tuple[np.ndarray, dict[float, np.ndarray], np.ndarray]],
               default: float | None) -> np.ndarray:
    """One row per (frame, ours by strength, Gatys): frame, the ramp, the default, Gatys."""
    tiles = []
    for frame, ours, theirs in rows:
        height = round(frame.shape[0] * SHEET_TILE_WIDTH / frame.shape[1])
        chosen = [ours[default]] if default is not None else []
        tiles.append(np.hstack([cv2.resize(image, (SHEET_TILE_WIDTH, height),
                                           interpolation=cv2.INTER_AREA)
                                for image in (frame, *(ours[s] for s in RAMP), *chosen,
                                              theirs)]))
    return np.vstack(tiles)


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.quality.strength",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--models-dir", type=Path, default=Path("gpu/styles"))
    parser.add_argument("--styles", nargs="+", default=None,
                        help="model file names (stems) to report; default: every one")
    parser.add_argument("--frames", type=Path, default=Path(".carry/content/heldout_720p"))
    parser.add_argument("--frame-names", nargs="+", default=None)
    parser.add_argument("--gatys-cache", type=Path, default=Path("bench/gatys_images"))
    parser.add_argument("--styles-dir", type=Path, action="append", default=None)
    parser.add_argument("--json-out", type=Path, required=True)
    parser.add_argument("--sheets-dir", type=Path, default=None)
    parser.add_argument("--reuse-style-losses", type=Path, default=None, metavar="REPORT",
                        help="take content and style losses from this earlier report of the "
                             "same grid and frames instead of running VGG")
    parser.add_argument("--stroke-scale", type=float, default=1.0,
                        help="brush size to paint at (gpu.controls)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    return parser


def outline_difference(report: dict, reused: dict) -> float:
    """Largest difference between this report's outline terms and ``reused``'s structure."""
    differences = [0.0]
    for style, entry in report["styles"].items():
        for frame_name, record in entry["frames"].items():
            old = reused["styles"][style]["frames"][frame_name]
            columns = [(record["gatys"], old["gatys"])] + [
                (record["ours"][s], old["ours"][s]) for s in record["ours"]]
            differences += [abs(new["outline"] - was["structure"]) for new, was in columns]
    return max(differences)


def main(argv: list[str] | None = None) -> dict:
    args = get_args_parser().parse_args(argv)
    torch.manual_seed(0)
    styles_dirs = args.styles_dir or list(DEFAULT_STYLE_DIRS)
    names = args.frame_names or sorted(p.stem for p in args.frames.glob("*.png"))
    frames = {name: read_rgb(args.frames / f"{name}.png") for name in names}
    model_names = args.styles or sorted(p.stem for p in args.models_dir.glob("*.safetensors"))
    controls.check_stroke_scale(args.stroke_scale)
    device = torch.device(args.device)
    reused = (json.loads(args.reuse_style_losses.read_text())
              if args.reuse_style_losses is not None else None)
    report = {"command": " ".join(["python -m bench.quality.strength",
                                   *(sys.argv[1:] if argv is None else argv)]),
              "structure_metric": METRIC, "grid": list(GRID), "structure_goal": STRUCTURE_GOAL,
              "style_goal": STYLE_GOAL, "stroke_scale": args.stroke_scale,
              "style_losses_from": ("measured here" if reused is None
                                    else str(args.reuse_style_losses)),
              "styles": {}}
    for name in model_names:
        model_path = args.models_dir / f"{name}.safetensors"
        style = model_settings(model_path)["style"]
        losses = (measured_losses(style, model_path, styles_dirs, device) if reused is None
                  else reused_losses(reused, str(args.reuse_style_losses), name))
        entry, sheet = evaluate_style(style, model_path, frames, args.gatys_cache, losses,
                                      args.stroke_scale, device)
        report["styles"][name] = entry
        print(name, json.dumps({k: v for k, v in entry.items() if k != "frames"}), flush=True)
        if args.sheets_dir is not None and sheet is not None:
            write_jpeg_within(args.sheets_dir / f"strength_{name}.jpg", sheet)
    if reused is not None:
        report["reused_report"] = {
            "structure_metric": reused.get("structure_metric", OUTLINE_ONLY),
            "default_strength": {name: entry.get("default_strength")
                                 for name, entry in reused["styles"].items()}}
        if "structure_metric" not in reused:
            # That report's structure was the outline term alone, so the two must agree.
            report["outline_vs_reused_structure_max_abs_diff"] = outline_difference(report,
                                                                                     reused)
    atomic_write_json(args.json_out, report)
    return report


if __name__ == "__main__":
    main()
