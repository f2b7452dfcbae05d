"""The quality report's Gatys cache: each run's losses and timing as a keyed JSON record.

A Gatys result depends only on the painting, the frame, the step count, the sizes and the
criterion, not on our networks, so each finished run's losses and timing go to a JSON file at
once, and a later report reuses them instead of running pastiche again. A record is keyed by
style, frame, steps, frame size, style image size, content layer and the painting file's SHA-256
(a changed painting or setting misses the cache). :func:`seed_gatys_cache` fills the cache from
an earlier report's Gatys runs.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import torch

from bench.quality.inputs import file_sha256, find_painting, read_rgb
from gpu.jobdir import atomic_write_json
from gpu.train_data import resize_long_side

GATYS_LOSS_FIELDS = ("content_loss", "style_loss")
GATYS_TIMING_FIELDS = ("wall_seconds", "optimise_seconds", "concurrent_processes")
GATYS_RESULT_FIELDS = GATYS_LOSS_FIELDS + GATYS_TIMING_FIELDS


def gatys_cache_key(style: str, frame: str, steps: int, size: int, style_image_size: list[int],
                    content_layer: str, painting_sha256: str) -> dict:
    """Everything a Gatys run's losses depend on, as stored in its cache record.

    Besides the painting (by content), the frame, the steps and the frame size, the style image
    size (what pastiche and the criterion get) and the criterion's content layer change the
    losses, so they are part of the key too.
    """
    return {"style": style, "frame": frame, "gatys_steps": steps, "size": size,
            "style_image_size": [int(side) for side in style_image_size],
            "content_layer": content_layer, "painting_sha256": painting_sha256}


def gatys_cache_path(cache_dir: Path, key: dict) -> Path:
    """The record file of ``key``: readable style and frame, then a digest of the whole key."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir / f"{key['style']}__{key['frame']}__{digest}.json"


def write_gatys_record(cache_dir: Path, key: dict, result: dict, date: str,
                       device: str) -> Path:
    """Store one Gatys run's losses and timing under ``key``, atomically; returns the file."""
    path = gatys_cache_path(cache_dir, key)
    atomic_write_json(path, {"key": key, **{field: result[field] for field in GATYS_RESULT_FIELDS},
                             "date": date, "device": device})
    return path


def read_gatys_record(cache_dir: Path, key: dict) -> dict | None:
    """The cached record of ``key``, or None when there is none or it does not fit.

    A record whose stored key differs from ``key`` (edited, or a digest collision) or which
    lacks a field is ignored with a note on stderr, so the run is done again.
    """
    path = gatys_cache_path(cache_dir, key)
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        print(f"gatys cache: ignoring unreadable {path}: {error}", file=sys.stderr, flush=True)
        return None
    stored = record.get("key") if isinstance(record, dict) else None
    stored = stored if isinstance(stored, dict) else {}
    if stored != key:
        differing = sorted(field for field in {*key, *stored}
                           if stored.get(field) != key.get(field))
        print(f"gatys cache: ignoring {path}: its key differs in {', '.join(differing)}",
              file=sys.stderr, flush=True)
        return None
    missing = [field for field in (*GATYS_RESULT_FIELDS, "date", "device") if field not in record]
    if missing:
        print(f"gatys cache: ignoring {path}: no {', '.join(missing)}", file=sys.stderr,
              flush=True)
        return None
    return record


def check_painting_size(painting_file: Path, style_image_size: list[int]) -> None:
    """Raise ValueError unless the painting, resized as for a report, has that report's size.

    A report does not record its paintings' hashes; a painting of another aspect ratio is
    surely not the one it measured.
    """
    resized = resize_long_side(torch.from_numpy(read_rgb(painting_file)), max(style_image_size))
    if list(resized.shape[2:]) != list(style_image_size):
        raise ValueError(f"{painting_file} resized to long side {max(style_image_size)} is "
                         f"{list(resized.shape[2:])}, the report's painting was "
                         f"{list(style_image_size)}: not the painting it measured")


def seed_gatys_cache(report: dict, styles_dirs: list[Path], cache_dir: Path) -> list[Path]:
    """Cache records for every Gatys run of an earlier report; returns the files written.

    Keys come from the report's settings and styles and from the paintings found in
    ``styles_dirs`` as a report run finds them: they must be the paintings the report used.
    Runs the report itself took from a cache keep their own date and device.

    Raises:
        ValueError: a painting's size does not match the report's (see
            :func:`check_painting_size`).
    """
    settings = report["settings"]
    written = []
    for style, entry in report["styles"].items():
        runs = entry.get("gatys", {}).get("per_frame", [])
        if not runs:
            continue
        painting_file = find_painting(styles_dirs, style)
        check_painting_size(painting_file, entry["painting_size_used"])
        painting_sha256 = file_sha256(painting_file)
        for run in runs:
            key = gatys_cache_key(style, run["frame"], settings["gatys_steps"], settings["size"],
                                  entry["painting_size_used"], entry["content_layer"],
                                  painting_sha256)
            written.append(write_gatys_record(cache_dir, key, run,
                                              run.get("date", report["date"]),
                                              run.get("device", report["device"])))
    return written
