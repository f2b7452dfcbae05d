"""Copy trained style models into ``gpu/styles/`` and rewrite its ``manifest.json``.

    python -m tools.ship_styles TRAIN_OUTPUT_DIR [TRAIN_OUTPUT_DIR ...] [--note TEXT]

Each folder is a ``gpu.train`` output (``model.safetensors`` + ``metrics.json``); the style name
comes from the weights' metadata. Entries for styles not named keep what the manifest had.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from gpu.jobdir import atomic_write_json
from gpu.model import load_style_model, read_metadata
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


def ship(train_dir: Path, note: str) -> dict:
    """Copy one trained model into the shipped set; return its manifest entry."""
    weights = train_dir / "model.safetensors"
    metadata = read_metadata(weights)
    name = metadata["style"]
    if name not in PAINTINGS:
        raise SystemExit(f"{name}: not one of the shipped paintings {sorted(PAINTINGS)}")
    if weights.stat().st_size > MAX_BYTES:
        raise SystemExit(f"{name}: {weights.stat().st_size} bytes is over the 4 MB budget")
    load_style_model(weights)  # refuse to ship weights that do not load
    metrics = json.loads((train_dir / "metrics.json").read_text())
    shutil.copyfile(weights, SHIPPED_DIR / f"{name}.safetensors")
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("train_dirs", type=Path, nargs="+")
    parser.add_argument("--note", default="", help="how and where these were trained")
    args = parser.parse_args()
    entries = {}
    if MANIFEST_PATH.exists():
        entries = {e["name"]: e for e in json.loads(MANIFEST_PATH.read_text())["styles"]}
    for train_dir in args.train_dirs:
        entry = ship(train_dir, args.note)
        entries[entry["name"]] = entry
        print(f"shipped {entry['name']}")
    atomic_write_json(MANIFEST_PATH, {"styles": [entries[n] for n in sorted(entries)]})


if __name__ == "__main__":
    main()
