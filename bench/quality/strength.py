"""Strength report: structure and style of every style network across strengths, against Gatys.

For each style and each held-out 720p frame that has a cached Gatys image
(:mod:`bench.quality.gatys`), the frame is painted through the GPU job's own path
(:func:`gpu.controls.paint`, default stroke scale) at a grid of strengths and scored with the
structure score (:mod:`bench.quality.structure`) and training's Gram style loss at the frame's
size; Gatys' image is scored the same way. The same frames enlarged to 1080p are painted too,
to show that the default stroke scale looks the same there.

The default strength of a style is the highest strength of the grid whose structure is at
least :data:`STRUCTURE_GOAL` of Gatys' on every frame: the picture keeps its subject. Its style
loss ratio to Gatys' is reported against :data:`STYLE_GOAL`, met or not. A ramp sheet per
style (strengths 0, 0.25, 0.5, 0.75, 1, then Gatys) is written as PNG.

    python -m bench.quality.strength --models-dir gpu/styles --gatys-cache bench/gatys_images \
        --frames .carry/content/heldout_720p --json-out docs/strength.json --sheets-dir docs/
"""

from __future__ import annotations

import argparse
import glob
import json
from pathlib import Path

import cv2
import numpy as np
import torch

from bench.quality.report import (
    DEFAULT_STYLE_DIRS,
    perceptual_losses,
    read_rgb,
    style_targets,
    write_png_within,
)
from bench.quality.structure import structure_score
from gpu import controls
from gpu.jobdir import atomic_write_json
from gpu.model import load_style_model

STRUCTURE_GOAL = 0.9
STYLE_GOAL = 1.5
GRID = (0.0, 0.25, 0.35, 0.4, 0.45, 0.5, 0.75, 1.0)
RAMP = (0.0, 0.25, 0.5, 0.75, 1.0)
SHEET_TILE_WIDTH = 384


def to_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255


def to_image(frames: torch.Tensor) -> np.ndarray:
    return (frames[0].clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def painted(model: torch.nn.Module, frame: np.ndarray, strength: float) -> np.ndarray:
    model.set_strength(strength)
    with torch.no_grad():
        return to_image(controls.paint(model, to_tensor(frame)))


def gatys_image(cache: Path, style: str, frame: str, height: int) -> np.ndarray | None:
    found = sorted(glob.glob(str(cache / f"{style}__{frame}__{height}p__*.png")))
    return read_rgb(Path(found[0])) if found else None


def choose_default(rows: dict[float, list[float]], gatys: list[float]) -> float | None:
    """The highest strength whose structure is at least the goal's share of Gatys' everywhere."""
    fitting = [s for s, scores in rows.items()
               if all(ours >= STRUCTURE_GOAL * theirs for ours, theirs in
                      zip(scores, gatys, strict=True))]
    return max(fitting) if fitting else None


def evaluate_style(style: str, model_path: Path, frames: dict[str, np.ndarray], cache: Path,
                   styles_dirs: list[Path]) -> tuple[dict, list[np.ndarray]]:
    device = torch.device("cpu")
    target = style_targets({style: model_path}, styles_dirs, None, None, device)[style]
    model = load_style_model(model_path)
    entry: dict = {"model": str(model_path), "frames": {}}
    tiles = []
    for name, frame in frames.items():
        theirs = gatys_image(cache, style, name, frame.shape[0])
        if theirs is None:
            continue
        gatys_losses = perceptual_losses(target.criterion, theirs, frame, device)
        record = {"gatys": {"structure": structure_score(frame, theirs), **gatys_losses},
                  "ours": {}, "ours_1080p_structure": {}}
        ramp = []
        big = cv2.resize(frame, (frame.shape[1] * 3 // 2, frame.shape[0] * 3 // 2),
                         interpolation=cv2.INTER_CUBIC)
        for strength in GRID:
            image = painted(model, frame, strength)
            losses = perceptual_losses(target.criterion, image, frame, device)
            record["ours"][str(strength)] = {"structure": structure_score(frame, image),
                                             **losses}
            record["ours_1080p_structure"][str(strength)] = structure_score(
                big, painted(model, big, strength))
            if strength in RAMP:
                ramp.append(image)
        entry["frames"][name] = record
        height = round(frame.shape[0] * SHEET_TILE_WIDTH / frame.shape[1])
        tiles.append(np.hstack([cv2.resize(image, (SHEET_TILE_WIDTH, height),
                                           interpolation=cv2.INTER_AREA)
                                for image in (frame, *ramp, theirs)]))
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
    return entry, tiles


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.quality.strength",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--models-dir", type=Path, default=Path("gpu/styles"))
    parser.add_argument("--styles", nargs="+", default=None)
    parser.add_argument("--frames", type=Path, default=Path(".carry/content/heldout_720p"))
    parser.add_argument("--frame-names", nargs="+", default=None)
    parser.add_argument("--gatys-cache", type=Path, default=Path("bench/gatys_images"))
    parser.add_argument("--styles-dir", type=Path, action="append", default=None)
    parser.add_argument("--json-out", type=Path, required=True)
    parser.add_argument("--sheets-dir", type=Path, default=None)
    return parser


def main(argv: list[str] | None = None) -> dict:
    args = get_args_parser().parse_args(argv)
    torch.manual_seed(0)
    styles_dirs = args.styles_dir or list(DEFAULT_STYLE_DIRS)
    names = args.frame_names or sorted(p.stem for p in args.frames.glob("*.png"))
    frames = {name: read_rgb(args.frames / f"{name}.png") for name in names}
    styles = args.styles or sorted(p.stem for p in args.models_dir.glob("*.safetensors"))
    report = {"grid": list(GRID), "structure_goal": STRUCTURE_GOAL, "style_goal": STYLE_GOAL,
              "stroke_scale": 1.0, "styles": {}}
    for style in styles:
        entry, tiles = evaluate_style(style, args.models_dir / f"{style}.safetensors", frames,
                                      args.gatys_cache, styles_dirs)
        report["styles"][style] = entry
        print(style, json.dumps({k: v for k, v in entry.items() if k != "frames"}), flush=True)
        if args.sheets_dir is not None and tiles:
            write_png_within(args.sheets_dir / f"strength_{style}.png", np.vstack(tiles))
    atomic_write_json(args.json_out, report)
    return report


if __name__ == "__main__":
    main()
