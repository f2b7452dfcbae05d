"""Scaling of the GPU job over MPI ranks (one per GPU), against one rank; prints JSON.

For each clip (by default the issue's two, as :mod:`bench.stylize_job` builds them), this cuts
the clip into chunks once, then runs ``gpu.stylize`` once per rank count in ``--rank-counts``
(under ``mpiexec --bind-to none`` above one rank; each rank drives GPU ``local rank mod GPU
count``) on the same chunks, and reports each run's steady frames/s after warm-up, its wall
time, its per-stage busy shares and the GPUs' busy share, and the scaling efficiency
``fps(n) / (n x fps(1))``. Goal: at least 0.9 at every n above 1.

The host's cores are shared by all ranks' x264 encoders, so on a node whose cores do not grow
with its GPUs the codec, not the GPUs, sets the ceiling: the report has the host's core count,
its x264 rate with all its cores (measured once, laid out as the largest run), and the
encoders' busy share in every run, to tell the two apart.

    python -m bench.scaling --device cuda --rank-counts 1,2 --out scaling.json

Every option of :mod:`bench.stylize_job` applies (``--compile``, ``--encoder-threads``,
``--clip``, ...) but ``--job-runs`` (each rank count runs once); ``--ranks`` is ignored for
``--rank-counts``. ``--device cpu --smoke`` runs tiny clips, for tests.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from bench import codec_rates, stylize_job
from gpu import jobdir
from gpu.ffmpeg import find_ffmpeg

EFFICIENCY_GOAL = 0.9


def get_args_parser() -> argparse.ArgumentParser:
    parser = stylize_job.get_args_parser()
    parser.description = "Scaling of the GPU job over MPI ranks"
    parser.add_argument("--rank-counts", default="1,2",
                        help="comma-separated rank counts; the first must be 1 (the reference)")
    return parser


def parse_rank_counts(text: str) -> list[int]:
    counts = [int(part) for part in text.split(",") if part.strip()]
    if not counts or counts[0] != 1 or any(c < 1 for c in counts) or \
            len(set(counts)) != len(counts):
        raise SystemExit(f"--rank-counts must start with 1 and list distinct positive counts, "
                         f"not {text!r}")
    return counts


def efficiency(fps: float, ranks: int, reference_fps: float) -> float | None:
    """``fps / (ranks x reference_fps)``: 1.0 is linear scaling."""
    return round(fps / (ranks * reference_fps), 4) if reference_fps > 0 else None


def scale_clip(args: argparse.Namespace, name: str, counts: list[int], workdir: Path,
               ffmpeg: str, device: torch.device) -> dict[str, Any]:
    clip = stylize_job.prepare_clip(args, name, workdir, ffmpeg)
    manifest, input_dir, folder = clip.manifest, clip.input_dir, clip.folder
    widest = argparse.Namespace(**{**vars(args), "ranks": max(counts)})
    host, _ = stylize_job.clip_host_rates(widest, clip, device, ffmpeg)
    runs = []
    for count in counts:
        run_args = argparse.Namespace(**{**vars(args), "ranks": count})
        summary, launch_seconds = stylize_job.run_job(run_args, input_dir,
                                                      folder / f"out-{count}", ffmpeg)
        stages = stylize_job.stage_rates(summary)
        runs.append({
            "ranks": count,
            "devices": sorted({r.device_id for r in summary.ranks}),
            "fps": summary.steady_fps,
            "wall_fps": summary.fps,
            "wall_seconds": summary.wall_seconds,
            "launch_seconds": round(launch_seconds, 2),
            "warmup_seconds": summary.warmup_seconds,
            "frames": summary.frames_processed,
            "threads_per_rank": [r.threads for r in summary.ranks],
            "encoders_per_rank": [r.encoders for r in summary.ranks],
            "device_busy_fraction": summary.device_busy_fraction,
            "host_cpu_busy_fraction": stylize_job.host_cpu_busy_fraction(summary),
            "stages": stages,
        })
        stylize_job.log(f"{name}: {count} rank(s): {summary.steady_fps} fps")
    reference = runs[0]["fps"]
    for run in runs:
        run["efficiency"] = efficiency(run["fps"], run["ranks"], reference)
    checked = [r for r in runs if r["ranks"] > 1]
    return {
        "clip": name,
        "frames": manifest.total_frames,
        "size": f"{manifest.width}x{manifest.height}",
        "chunks": len(manifest.chunks),
        "chunk_frames": clip.chunk_frames,
        "host": host,
        "runs": runs,
        "goal": f"efficiency >= {EFFICIENCY_GOAL} at every rank count above 1",
        "met": bool(checked) and all((r["efficiency"] or 0) >= EFFICIENCY_GOAL for r in checked),
    }


def main(args: argparse.Namespace) -> dict[str, Any]:
    if args.job_runs != 1:
        raise SystemExit("bench.scaling runs each rank count once; --job-runs is "
                         "bench.stylize_job's")
    counts = parse_rank_counts(args.rank_counts)
    stylize_job.check_model_fps_json(args.model_fps_json)
    ffmpeg = find_ffmpeg()
    use_cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    device = torch.device("cuda", 0) if use_cuda else torch.device("cpu")
    gpus = torch.cuda.device_count() if use_cuda else 0
    if use_cuda and max(counts) > gpus:
        stylize_job.log(f"{max(counts)} ranks on {gpus} GPU(s): some ranks share a GPU")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="scaling-bench-"))
    report = codec_rates.describe_host(ffmpeg, device) | {
        "gpus": gpus,
        "settings": {"rank_counts": counts, "encoders": args.encoders or "default",
                     "compile": args.compile, "encoder_threads": args.encoder_threads or "default",
                     "batch_size": args.batch_size or "default", "crf": args.crf,
                     "preset": args.preset, "chunk_seconds": args.chunk_seconds or "default",
                     "chunk_codec": args.chunk_codec,
                     "max_waiting_batches": args.max_waiting_batches or "off"},
        "clips": [],
    }
    started = time.perf_counter()
    report = stylize_job.run_clips(
        args, report, workdir,
        lambda name: scale_clip(args, name, counts, workdir, ffmpeg, device))
    # Written once more with the time: run_clips has already written it without.
    report["seconds"] = round(time.perf_counter() - started, 1)
    if args.out:
        jobdir.atomic_write_json(args.out, report)
    return report

if __name__ == "__main__":
    print(json.dumps(main(get_args_parser().parse_args()), indent=2))
