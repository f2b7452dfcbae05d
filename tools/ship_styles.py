"""Copy trained style models into ``gpu/styles/`` and rewrite its ``manifest.json``.

    python -m tools.ship_styles TRAIN_OUTPUT_DIR [TRAIN_OUTPUT_DIR ...] [--note TEXT]
    python -m tools.ship_styles --quality docs/quality.json
    python -m tools.ship_styles TRAIN_OUTPUT_DIR [...] --quality REPORT
    python -m tools.ship_styles --strength docs/strength.json [--adopt-defaults]

Each folder is a ``gpu.train`` output (``model.safetensors`` + ``metrics.json``); the style name
comes from the weights' metadata. Entries for styles not named keep what the manifest had; a
newly shipped style has no ``quality`` section until a report that measured its weights is
attached.

``--quality`` attaches each shipped style's numbers from a quality report
(``python -m bench.quality``) under its entry's ``quality`` key. The report must cover every
shipped style, and each style's ``model`` must be that style's file in ``gpu/styles/``, with
the same SHA-256 where the report records one; nothing is written otherwise.

``--strength`` attaches a strength report's default strength and its goal checks; the shipped
weights must already carry that default, unless ``--adopt-defaults`` writes it into their
metadata (the tensors stay bit for bit).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from bench.quality.inputs import file_sha256
from bench.quality.metrics import ratio
from gpu.jobdir import atomic_write_json
from gpu.model import load_style_model, read_metadata, write_default_strength
from tasks.repo import REPO_ROOT
from tasks.styles import MANIFEST_PATH, SHIPPED_DIR

PAINTINGS: dict[str, tuple[str, str, str]] = {
    "starry_night": ("The Starry Night", "Vincent van Gogh", "1889"),
    "the_scream": ("The Scream", "Edvard Munch", "1893"),
    "great_wave": ("The Great Wave off Kanagawa", "Katsushika Hokusai", "c. 1831"),
    "shipwreck_of_the_minotaur": ("The Shipwreck of the Minotaur", "J. M. W. Turner", "c. 1810"),
    "udnie": ("Udnie (Young American Girl, The Dance)", "Francis Picabia", "1913"),
    "woman_with_a_hat": ("Woman with a Hat", "Henri Matisse", "1905"),
}
MAX_BYTES = 4 * 1024 * 1024
# `python -m bench.quality` names a baseline goal's subject "<shipped style> vs <baseline>".
BASELINE_SUBJECT_SEPARATOR = " vs "
SPEED_KEYS = ("batch", "ms_per_frame_batched", "ms_per_frame_batch_1",
              "gatys_solo_wall_seconds_per_frame", "speedup_vs_gatys_batched",
              "speedup_vs_gatys_batch_1")
GATYS_KEYS = ("frames", "steps", "style_loss", "content_loss", "ours_style_loss_same_frames",
              "ours_content_loss_same_frames")


def trained_entry(train_dir: Path, note: str) -> dict:
    """Check one trained model and return its manifest entry (copying is left to the caller)."""
    weights = train_dir / "model.safetensors"
    metadata = read_metadata(weights)
    name = metadata["style"]
    if name not in PAINTINGS:
        raise SystemExit(f"{name}: not one of the shipped paintings {sorted(PAINTINGS)}")
    if weights.stat().st_size > MAX_BYTES:
        raise SystemExit(f"{name}: {weights.stat().st_size} bytes is over the 4 MB budget")
    load_style_model(weights)  # refuse to ship weights that do not load
    metrics = json.loads((train_dir / "metrics.json").read_text())
    painting, painter, year = PAINTINGS[name]
    return {
        "name": name,
        "file": f"{name}.safetensors",
        "painting": painting,
        "painter": painter,
        "year": year,
        "arch": metadata["arch"],
        "hparams": json.loads(metadata["hparams"]),
        "training": json.loads(metadata["training"]),
        "metrics": metrics,
        "note": note,
    }


def _number(value: object, where: str) -> float:
    """``value`` if it is a number; otherwise the report lacks a metric the issue asks for.

    Raises:
        SystemExit: the value is missing, None (not measured) or not a number.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SystemExit(f"{where} is {value!r}, not a number")
    return value


def _names_shipped_file(model_path: str, file: str) -> bool:
    """Whether the report's model path ends in ``gpu/styles/<file>``, whatever its root.

    The report may come from another machine, where the repository lies elsewhere.
    """
    shipped_parts = (SHIPPED_DIR / file).relative_to(REPO_ROOT).parts
    return Path(model_path).parts[-len(shipped_parts):] == shipped_parts


def style_quality(report: dict, name: str, report_label: str) -> dict:
    """One style's metrics from a quality report, as its manifest entry's ``quality`` section.

    The ratios are the quality report's own (ours / Gatys on the frames Gatys ran on); the goal
    checks are the report's checks of this style and of its comparisons with baselines.

    Raises:
        SystemExit: a metric is missing or was not measured.
    """
    style = report["styles"][name]
    if "skipped" in style["gatys"]:
        raise SystemExit(f"{name}: the report has no Gatys losses ({style['gatys']['skipped']})")
    gatys = {key: _number(style["gatys"].get(key), f"{name} gatys {key}") for key in GATYS_KEYS}
    for loss in ("style_loss", "content_loss"):
        gatys[f"ours_over_gatys_{loss}"] = _number(
            ratio(gatys[f"ours_{loss}_same_frames"], gatys[loss]), f"{name} {loss} ours / Gatys")
    if not style["temporal"]:
        raise SystemExit(f"{name}: the report has no warping error (it measured no clip)")
    goals = [{key: check[key] for key in ("subject", "goal", "measured", "threshold", "met")}
             for check in report["goals"]["checks"]
             if check["subject"].split(BASELINE_SUBJECT_SEPARATOR)[0] == name]
    return {
        "report": report_label,
        "date": report["date"],
        "device": report["device"],
        "ours": {"frames": len(report["settings"]["frames"]),
                 **{loss: _number(style["ours"].get(loss), f"{name} ours {loss}")
                    for loss in ("style_loss", "content_loss")}},
        "gatys": gatys,
        "speed": {key: _number(style["speed"].get(key), f"{name} speed {key}")
                  for key in SPEED_KEYS},
        "warping_error": {
            clip: {key: _number(errors.get(key), f"{name} clip {clip} {key}")
                   for key in ("warping_error", "input_warping_error")}
            for clip, errors in style["temporal"].items()},
        "goals": goals,
    }


def attach_quality(entries: dict[str, dict], report: dict, report_label: str
                   ) -> dict[str, dict]:
    """The manifest entries with each one's ``quality`` section taken from ``report``.

    Args:
        entries: manifest entries by style name.
        report: a ``python -m bench.quality`` report.
        report_label: where the report lives, recorded in each section.

    Raises:
        SystemExit: the report lacks a shipped style, measured a model other than a style's
            shipped file, or lacks a metric; a stale or partial report is never attached.
    """
    missing = sorted(set(entries) - set(report["styles"]))
    if missing:
        raise SystemExit(f"{report_label} does not cover the shipped style(s) {missing}")
    for name, entry in entries.items():
        measured = report["styles"][name]
        model, shipped = measured["model"], SHIPPED_DIR / entry["file"]
        if not _names_shipped_file(model, entry["file"]):
            raise SystemExit(f"{report_label}: {name} was measured on {model}, not the shipped "
                             f"{shipped.relative_to(REPO_ROOT)}")
        # Reports from before the quality report recorded the hash can only be checked by path.
        if "model_sha256" in measured and measured["model_sha256"] != file_sha256(shipped):
            raise SystemExit(f"{report_label}: {name} was measured on other weights than the "
                             f"shipped {shipped.relative_to(REPO_ROOT)} (SHA-256 differs)")
    return {name: {**entry, "quality": style_quality(report, name, report_label)}
            for name, entry in entries.items()}


def attach_strength(entries: dict[str, dict], report: dict, report_label: str,
                    adopt_defaults: bool = False) -> dict[str, dict]:
    """The entries with each one's ``strength`` section from a ``bench.quality.strength`` report.

    Raises:
        SystemExit: the report lacks a shipped style, or its default strength is not the one
            the shipped weights carry.
    """
    attached = {}
    for name, entry in entries.items():
        measured = report["styles"].get(name)
        if measured is None or measured.get("default_strength") is None:
            raise SystemExit(f"{report_label} has no default strength for {name}")
        weights = SHIPPED_DIR / entry["file"]
        if adopt_defaults:
            write_default_strength(weights, measured["default_strength"])
        weights_default = float(read_metadata(weights)["default_strength"])
        if weights_default != measured["default_strength"]:
            raise SystemExit(f"{name}: the weights' default strength {weights_default} is not "
                             f"the report's {measured['default_strength']}")
        attached[name] = {**entry, "strength": {"report": report_label,
                                                "default": measured["default_strength"],
                                                "frames": sorted(measured["frames"]),
                                                **measured["at_default"]}}
    return attached


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("train_dirs", type=Path, nargs="*")
    parser.add_argument("--note", default="", help="how and where these were trained")
    parser.add_argument("--quality", type=Path, metavar="REPORT",
                        help="`python -m bench.quality` report that measured the shipped weights")
    parser.add_argument("--strength", type=Path, metavar="REPORT",
                        help="bench.quality.strength report that chose the default strengths")
    parser.add_argument("--adopt-defaults", action="store_true",
                        help="with --strength: write the report's default strengths into the "
                             "shipped weights")
    args = parser.parse_args()
    if not args.train_dirs and args.quality is None and args.strength is None:
        parser.error("give TRAIN_OUTPUT_DIRs, --quality REPORT, --strength REPORT, or some")
    entries = {}
    if MANIFEST_PATH.exists():
        entries = {e["name"]: e for e in json.loads(MANIFEST_PATH.read_text())["styles"]}
    trained = {}
    for train_dir in args.train_dirs:
        entry = trained_entry(train_dir, args.note)
        entries[entry["name"]] = entry
        trained[entry["name"]] = train_dir / "model.safetensors"
    if args.quality is not None:
        report_path = args.quality.resolve()
        report_label = str(report_path.relative_to(REPO_ROOT)
                           if report_path.is_relative_to(REPO_ROOT) else report_path)
        entries = attach_quality(entries, json.loads(report_path.read_text()), report_label)
        print(f"attached {report_label} to {', '.join(sorted(entries))}")
    # Only now that every check has passed, so that a refusal leaves the shipped set as it was.
    for name, weights in trained.items():
        shutil.copyfile(weights, SHIPPED_DIR / entries[name]["file"])
        print(f"shipped {name}")
    if args.strength is not None:
        entries = attach_strength(entries, json.loads(args.strength.read_text()),
                                  str(args.strength), args.adopt_defaults)
    atomic_write_json(MANIFEST_PATH, {"styles": [entries[n] for n in sorted(entries)]})


if __name__ == "__main__":
    main()
