"""Benchmark the GPU job on a synthetic job folder and print where its time goes.

Builds a job folder from an FFmpeg test pattern (FFV1 RGB chunks, as the CPU side writes them)
and a seeded, untrained network of the real size, runs ``gpu.stylize`` on it (under ``mpiexec``
when ``--ranks`` is above 1) and prints the summary and the mean per-stage seconds per chunk.

    python -m bench.stylize_job --width 1920 --height 1080 --chunks 4 --frames 48 --ranks 1
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from gpu import jobdir
from gpu.jobdir import ChunkSpec, EncodeSettings, JobManifest
from gpu.model import build_model, save_weights
from gpu.video_io import find_ffmpeg, run_ffmpeg


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Benchmark gpu.stylize on a synthetic job")
    parser.add_argument("--width", type=int, default=1920)
    parser.add_argument("--height", type=int, default=1080)
    parser.add_argument("--chunks", type=int, default=4)
    parser.add_argument("--frames", type=int, default=48, help="frames per chunk")
    parser.add_argument("--arch", default="stylenet")
    parser.add_argument("--ranks", type=int, default=1)
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where to build the job (default: a temporary folder, removed)")
    parser.add_argument("job_args", nargs=argparse.REMAINDER,
                        help="after '--': arguments for gpu.stylize (e.g. --batch-size 16)")
    return parser


def build_job(folder: Path, args: argparse.Namespace, ffmpeg: str) -> JobManifest:
    """A job folder with ``args.chunks`` FFV1 RGB chunks of a moving test pattern."""
    (folder / jobdir.CHUNKS_DIR).mkdir(parents=True, exist_ok=True)
    chunks = []
    for index in range(args.chunks):
        chunk = ChunkSpec(index=index, file=f"{jobdir.CHUNKS_DIR}/{index:05d}.mkv",
                          frames=args.frames, first_frame=index * args.frames)
        pattern = (f"testsrc2=size={args.width}x{args.height}:rate=25,"
                   f"trim=start_frame={chunk.first_frame}:"
                   f"end_frame={chunk.first_frame + chunk.frames},setpts=PTS-STARTPTS")
        run_ffmpeg([ffmpeg, "-v", "error", "-f", "lavfi", "-i", pattern, "-c:v", "ffv1",
                    "-pix_fmt", "gbrp", "-slices", "16", "-f", "matroska",
                    str(folder / chunk.file)])
        chunks.append(chunk)
    manifest = JobManifest(width=args.width, height=args.height,
                           total_frames=args.chunks * args.frames, chunks=chunks,
                           encode=EncodeSettings())
    jobdir.write_manifest(folder, manifest)
    torch.manual_seed(0)
    save_weights(build_model(args.arch), folder / jobdir.MODEL_NAME)
    return manifest


def main(args: argparse.Namespace) -> None:
    ffmpeg = find_ffmpeg()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="stylize-bench-"))
    input_dir, output_dir = workdir / "in", workdir / "out"
    shutil.rmtree(output_dir, ignore_errors=True)
    started = time.perf_counter()
    build_job(input_dir, args, ffmpeg)
    print(f"built {args.chunks}x{args.frames} frames at {args.width}x{args.height} "
          f"in {time.perf_counter() - started:.1f} s", flush=True)
    job_args = [a for a in args.job_args if a != "--"]
    argv = [sys.executable, "-m", "gpu.stylize", "--input", str(input_dir),
            "--output", str(output_dir), "--ffmpeg", ffmpeg, *job_args]
    if args.ranks > 1:
        beside_python = Path(sys.executable).parent / "mpiexec"
        mpiexec = str(beside_python) if beside_python.exists() else shutil.which("mpiexec")
        # Unbound: by default mpiexec pins each rank, and its FFmpeg children, to one core.
        launcher = [mpiexec or "mpiexec", "-n", str(args.ranks), "--oversubscribe",
                    "--bind-to", "none"]
        argv = launcher + (["--allow-run-as-root"] if os.geteuid() == 0 else []) + argv
    started = time.perf_counter()
    subprocess.run(argv, check=True, cwd=Path(__file__).resolve().parent.parent)
    wall = time.perf_counter() - started
    summary = jobdir.read_summary(output_dir)
    reports = jobdir.read_reports(output_dir)
    per_stage = {stage: sum(getattr(r, f"{stage}_seconds") for r in reports) / len(reports)
                 for stage in ("decode", "infer", "encode")}
    print(json.dumps({"launch_wall_seconds": round(wall, 2), "job_fps": summary.fps,
                      "job_wall_seconds": summary.wall_seconds, "device": summary.device,
                      "mean_seconds_per_chunk": round(sum(r.seconds for r in reports)
                                                      / len(reports), 3),
                      "mean_stage_seconds_per_chunk": {k: round(v, 3)
                                                       for k, v in per_stage.items()}},
                     indent=2))
    if args.workdir is None:
        shutil.rmtree(workdir)


if __name__ == "__main__":
    main(get_args_parser().parse_args())
