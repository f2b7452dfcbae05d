"""Benchmark the GPU job against the host's codec rates, measured in the same run; prints JSON.

For each clip (by default the issue's two: 1920x1080 at 30 frames/s for 30 s, and 720x720 at
30 frames/s, 823 frames, with an audio track), this

1. builds it from an FFmpeg test pattern, encoded like an upload (H.264 and AAC in MP4), or
   takes a given file, and cuts it into raw chunks (Ut Video ones with ``--chunk-codec
   utvideo``) with the CPU side's own chunk plan and split (:mod:`bench.clips`);
2. measures the host: decoding the chunks with the job's decoder command (to their own planar
   format, with the job's decoder threads), or reading raw ones as the job does, as many at
   once as the job runs, and x264
   encoding at the job's CRF and preset with the job's encoder command, on frames the model
   stylized, as many processes at once as the job runs encoders, each once with every core's
   worth of threads and once with the cores shared out among them (the faster of the two is
   the host's encode rate, so the reference is the host's best, not the job's own layout);
3. runs ``gpu.stylize`` with the shipped model (under ``mpiexec`` for ``--ranks`` above 1) and
   reads its summary: steady-state frames/s after warm-up (compilation) and the warm-up
   itself, per-stage seconds and rates, and the shares of the run the GPU and the host's
   CPUs were busy;
4. compares the job with ``0.9 x min(model frames/s, host encode frames/s)``; the model's rate
   comes from a ``bench.model_fps`` JSON (``--model-fps-json``) at the clip's frame size, batch
   size and compile mode, and is left out of the target when that file has no such entry.

    python -m bench.stylize_job --model-fps-json model_fps.json --out stylize_job.json

``--device cpu --smoke`` runs tiny clips, for tests; ``--clip FILE`` benchmarks a real video.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench import codec_rates
from bench.clips import BUILT_CLIPS, DEFAULT_CLIPS, SplitClip, clip_source, split_clip
from bench.model_fps import SHIPPED_MODEL
from bench.variant_summary import TARGET_SHARE
from gpu import jobdir
from gpu.ffmpeg import find_ffmpeg
from gpu.jobdir import CHUNK_CODECS, EncodeSettings, JobManifest, JobSummary
from gpu.model import read_metadata
from gpu.stylize import COMPILE_MODES, resolve_compile_mode
from tasks.media.chunking import DEFAULT_CHUNK_SECONDS
from tasks.repo import REPO_ROOT

SMOKE_CHUNK_SECONDS = 0.5


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Benchmark gpu.stylize against host codec rates")
    parser.add_argument("--clip", action="append", default=None,
                        help=f"{', '.join(BUILT_CLIPS)} (built from a test pattern) or a video "
                             f"file; repeat for several (default: {', '.join(DEFAULT_CLIPS)})")
    parser.add_argument("--model", type=Path, default=SHIPPED_MODEL, help="style network weights")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--ranks", type=int, default=1, help="MPI ranks of the job")
    parser.add_argument("--encoders", type=int, default=0,
                        help="gpu.stylize --encoders (0: its default)")
    parser.add_argument("--compile", choices=["auto", *COMPILE_MODES], default="auto",
                        help="gpu.stylize --compile")
    parser.add_argument("--batch-size", type=int, default=0,
                        help="gpu.stylize --batch-size (0: its default)")
    parser.add_argument("--threads", type=int, default=0,
                        help="gpu.stylize --threads (0: its default, the cores over the ranks)")
    parser.add_argument("--encoder-threads", type=int, default=0,
                        help="gpu.stylize --encoder-threads (0: its default, all of the "
                             "rank's threads)")
    parser.add_argument("--max-waiting-batches", type=int, default=0,
                        help="gpu.stylize --max-waiting-batches (0: off, its default)")
    parser.add_argument("--chunk-codec", choices=list(CHUNK_CODECS), default="rawvideo",
                        help="codec of the input chunks, as the CPU side's compute.chunk_codec "
                             "(rawvideo, what 'auto' picks for the local backend: no decoding "
                             "on the host, several times the bytes; utvideo: azureml's)")
    parser.add_argument("--crf", type=int, default=EncodeSettings().crf)
    parser.add_argument("--preset", default=EncodeSettings().preset)
    parser.add_argument("--compare-presets", default="",
                        help="comma-separated x264 presets whose encode rate and PSNR are "
                             "measured too, for comparison")
    parser.add_argument("--chunk-seconds", type=float, default=None,
                        help="chunk length, as the CPU side's compute.chunk_seconds (default "
                             f"{DEFAULT_CHUNK_SECONDS}, {SMOKE_CHUNK_SECONDS} with --smoke)")
    parser.add_argument("--rate-frames", type=int, default=450,
                        help="frames encoded per encode-rate measurement")
    parser.add_argument("--job-runs", type=int, default=1,
                        help="runs of the job on the same chunks, each followed by a new "
                             "measurement of the host's x264 rate; each run's share of the "
                             "x264 rate uses the measurements on either side of it, and the "
                             "goal is judged on the median share (one run lasts seconds, and "
                             "both rates wander from run to run)")
    parser.add_argument("--model-fps-json", type=Path, default=None,
                        help="bench.model_fps output giving the model's frames/s for the target")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where to build clips and jobs (default: a temporary folder, "
                             "removed afterwards)")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny clips and chunks, for tests (use with --device cpu)")
    return parser


def job_argv(args: argparse.Namespace, input_dir: Path, output_dir: Path,
             ffmpeg: str) -> list[str]:
    argv = [sys.executable, "-m", "gpu.stylize", "--input", str(input_dir),
            "--output", str(output_dir), "--model", str(args.model), "--ffmpeg", ffmpeg,
            "--device", args.device, "--compile", args.compile,
            "--batch-size", str(args.batch_size), "--encoders", str(args.encoders)]
    if args.threads:
        argv += ["--threads", str(args.threads)]
    if args.encoder_threads:
        argv += ["--encoder-threads", str(args.encoder_threads)]
    if args.max_waiting_batches:
        argv += ["--max-waiting-batches", str(args.max_waiting_batches)]
    if args.ranks == 1:
        return argv
    beside_python = Path(sys.executable).parent / "mpiexec"
    mpiexec = str(beside_python) if beside_python.exists() else shutil.which("mpiexec")
    # Unbound: by default mpiexec pins each rank, and its FFmpeg children, to one core.
    launcher = [mpiexec or "mpiexec", "-n", str(args.ranks), "--oversubscribe",
                "--bind-to", "none"]
    return launcher + (["--allow-run-as-root"] if os.geteuid() == 0 else []) + argv


def stage_rates(summary: JobSummary) -> dict[str, dict[str, float]]:
    """Seconds, frames/s and busy share of the decode, network and encode stages.

    Decoders and encoders run one per chunk in flight: their rate is per decoder or encoder,
    their busy share is of all of them over the run. The network runs in one thread per rank.
    """
    frames, run = summary.frames_processed, summary.run_seconds
    lanes = sum(r.encoders for r in summary.ranks)
    stages = {}
    for stage, workers in (("decode", lanes), ("infer", len(summary.ranks)), ("encode", lanes)):
        seconds = sum(getattr(r, f"{stage}_seconds") for r in summary.ranks)
        stages[stage] = {
            "seconds": round(seconds, 3),
            "fps_per_worker": round(frames / seconds, 2) if seconds else 0.0,
            "workers": workers,
            "busy_fraction": round(seconds / (run * workers), 4) if run and workers else 0.0,
        }
    return stages


def host_cpu_busy_fraction(summary: JobSummary) -> float | None:
    """Mean over the ranks of the share of their host's CPU time that was busy over the run.

    Ranks on one host all measure that host, so on one node this is the node's figure; ranks
    that could not measure it (no ``/proc/stat``, or a summary older than the field) are left
    out, and None means none could.
    """
    measured = [r.host_cpu_busy_fraction for r in summary.ranks
                if r.host_cpu_busy_fraction is not None]
    return round(sum(measured) / len(measured), 4) if measured else None


def model_fps_from(path: Path | None, arch: str, width: int, height: int, batch: int,
                   variant: str) -> tuple[float | None, str]:
    """The network's frames/s from a ``bench.model_fps`` report, and where it came from."""
    if path is None:
        return None, "not given (--model-fps-json)"
    report = json.loads(path.read_text())
    for entry in report["results"]:
        if (entry.get("arch"), entry.get("size"), entry.get("batch"), entry.get("variant")) == \
                (arch, f"{width}x{height}", batch, variant) and "fps" in entry:
            return entry["fps"], f"{path.name}: {entry['model']} {variant} batch {batch}"
    return None, f"{path.name} has no {arch} {variant} batch {batch} entry at {width}x{height}"


def job_variant(device: torch.device, compile_mode: str) -> str:
    """The ``bench.model_fps`` variant that runs the network the way the job does."""
    precision = "bf16" if device.type == "cuda" else "fp32"
    return f"{precision}-{'eager' if compile_mode == 'none' else compile_mode}"


def run_job(args: argparse.Namespace, input_dir: Path, output_dir: Path,
            ffmpeg: str) -> tuple[JobSummary, float]:
    started = time.perf_counter()
    proc = subprocess.run(job_argv(args, input_dir, output_dir, ffmpeg), cwd=REPO_ROOT,
                          capture_output=True, text=True)
    launch_seconds = time.perf_counter() - started
    sys.stderr.write(proc.stdout[-4000:])
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-8000:])
        raise RuntimeError(f"gpu.stylize failed with exit status {proc.returncode}")
    return jobdir.read_summary(output_dir), launch_seconds


@dataclass(frozen=True)
class PreparedClip:
    """A benchmark clip cut into the job's input folder, in a folder of its own."""

    name: str
    folder: Path
    split: SplitClip
    prepare_seconds: float

    @property
    def input_dir(self) -> Path:
        return self.split.input_dir

    @property
    def manifest(self) -> JobManifest:
        return self.split.manifest

    @property
    def chunk_frames(self) -> int:
        return self.split.plan.chunk_frames


def prepare_clip(args: argparse.Namespace, name: str, workdir: Path,
                 ffmpeg: str) -> PreparedClip:
    """Build clip ``name`` (or take the file it names) and cut it as the CPU side does."""
    folder = workdir / name.replace("/", "_")
    folder.mkdir(parents=True)
    started = time.perf_counter()
    source = clip_source(name, args.smoke, folder, ffmpeg)
    chunk_seconds = args.chunk_seconds or (SMOKE_CHUNK_SECONDS if args.smoke
                                           else DEFAULT_CHUNK_SECONDS)
    split = split_clip(source, folder / "in", chunk_seconds, args.chunk_codec,
                       EncodeSettings(crf=args.crf, preset=args.preset), ffmpeg)
    prepare_seconds = time.perf_counter() - started
    manifest = split.manifest
    log(f"{name}: {manifest.total_frames} frames at {manifest.width}x{manifest.height}, "
        f"{len(manifest.chunks)} {split.plan.describe()}, prepared in {prepare_seconds:.1f} s")
    return PreparedClip(name, folder, split, prepare_seconds)


def clip_host_rates(args: argparse.Namespace, clip: PreparedClip, device: torch.device,
                    ffmpeg: str) -> tuple[dict[str, Any], np.ndarray]:
    """:func:`measure_host` on frames the model stylized from the clip's first chunk, and
    those frames."""
    sample = codec_rates.stylized_sample(args.model, clip.input_dir / clip.manifest.chunks[0].file,
                             clip.manifest, device, ffmpeg)
    host = codec_rates.measure_host(args, clip.manifest, clip.input_dir, sample, clip.folder,
                                    ffmpeg)
    log(f"{clip.name}: host {json.dumps(host)}")
    return host, sample


@dataclass(frozen=True)
class JobRun:
    """One run of the job, with the host's x264 rate measured on either side of it (None when
    the job ran once, against the host measurement alone)."""

    summary: JobSummary
    launch_seconds: float
    x264_fps_before: float | None = None
    x264_fps_after: float | None = None


def run_jobs(args: argparse.Namespace, clip: PreparedClip, host: dict[str, Any],
             sample: np.ndarray, ffmpeg: str) -> list[JobRun]:
    """The job ``args.job_runs`` times on the clip's chunks, each into a folder of its own.

    With more than one run, each is followed by a new measurement of the host's x264 rate in the
    layout that was the faster in ``host``, so every run has a rate from just before and just
    after it.
    """
    if args.job_runs == 1:
        return [JobRun(*run_job(args, clip.input_dir, clip.folder / "out", ffmpeg))]
    reference = host["encode"][args.preset]
    threads_each = codec_rates.encode_layouts(args)[reference["fps_from"]]
    before, runs = reference["fps"], []
    for run in range(args.job_runs):
        output_dir = clip.folder / f"out-{run}"
        summary, launch_seconds = run_job(args, clip.input_dir, output_dir, ffmpeg)
        shutil.rmtree(output_dir)
        after = codec_rates.x264_rate(args, clip.manifest, sample, clip.folder, ffmpeg,
                                      args.preset, threads_each)
        runs.append(JobRun(summary, launch_seconds, round(before, 2), round(after, 2)))
        log(f"{clip.name}: run {run + 1} of {args.job_runs}: {summary.steady_fps} fps, x264 "
            f"{before:.1f} before and {after:.1f} after")
        before = after
    return runs


def run_shares(runs: list[JobRun], model_fps: float | None) -> list[dict[str, Any]]:
    """Each run's frames/s over its limit: the lesser of the model's frames/s and the mean of
    the x264 rates measured on either side of the run."""
    shares = []
    for run in runs:
        assert run.x264_fps_before is not None and run.x264_fps_after is not None
        x264_fps = (run.x264_fps_before + run.x264_fps_after) / 2
        limit = min(x264_fps, model_fps) if model_fps else x264_fps
        shares.append({"fps": run.summary.steady_fps, "run_seconds": run.summary.run_seconds,
                       "x264_fps_before": run.x264_fps_before,
                       "x264_fps_after": run.x264_fps_after,
                       "share": round(run.summary.steady_fps / limit, 4)})
    return shares


def bench_clip(args: argparse.Namespace, name: str, workdir: Path, ffmpeg: str,
               device: torch.device) -> dict[str, Any]:
    clip = prepare_clip(args, name, workdir, ffmpeg)
    source, manifest = clip.split.source, clip.manifest
    host, sample = clip_host_rates(args, clip, device, ffmpeg)
    runs = run_jobs(args, clip, host, sample, ffmpeg)
    summary, launch_seconds = runs[0].summary, runs[0].launch_seconds

    compile_mode = summary.compile
    arch = read_metadata(args.model)["arch"]
    batch_size = summary.ranks[0].batch_size
    model_fps, model_source = model_fps_from(args.model_fps_json, arch, manifest.width,
                                             manifest.height, batch_size,
                                             job_variant(device, compile_mode))
    encode_fps = host["encode"][args.preset]["fps"]
    limit = min(encode_fps, model_fps) if model_fps else encode_fps
    target = TARGET_SHARE * limit
    report = {
        "clip": name,
        "source": source.report(),
        "frames": manifest.total_frames,
        "size": f"{manifest.width}x{manifest.height}",
        "input_format": {"pix_fmt": manifest.input_format.pix_fmt,
                         "matrix": manifest.input_format.matrix,
                         "codec": manifest.input_format.codec},
        "input_bytes": sum((clip.input_dir / c.file).stat().st_size for c in manifest.chunks),
        "chunks": len(manifest.chunks),
        "chunk_frames": clip.chunk_frames,
        "prepare_seconds": round(clip.prepare_seconds, 2),
        "host": host,
        "job": {
            "ranks": len(summary.ranks),
            "encoders_per_rank": [r.encoders for r in summary.ranks],
            "threads_per_rank": [r.threads for r in summary.ranks],
            "encoder_threads_per_rank": [r.encoder_threads for r in summary.ranks],
            "decoder_threads_per_rank": [r.decoder_threads for r in summary.ranks],
            "batch_size": batch_size,
            "compile": compile_mode,
            "fps": summary.steady_fps,
            "wall_fps": summary.fps,
            "wall_seconds": summary.wall_seconds,
            "launch_seconds": round(launch_seconds, 2),
            "run_seconds": summary.run_seconds,
            "warmup_seconds": summary.warmup_seconds,
            "device": summary.device,
            "device_busy_fraction": summary.device_busy_fraction,
            "host_cpu_busy_fraction": host_cpu_busy_fraction(summary),
            "stages": stage_rates(summary),
        },
        "gpu_busy_fraction": summary.device_busy_fraction if device.type == "cuda" else None,
        "model_fps": model_fps,
        "model_fps_source": model_source,
        "encode_fps": encode_fps,
        "target_fps": round(target, 2),
        "target_rule": f"{TARGET_SHARE} x min(model fps, encode fps at {args.preset})"
                       if model_fps else f"{TARGET_SHARE} x encode fps at {args.preset} "
                                         "(no model fps)",
        "met": summary.steady_fps >= target,
    }
    if len(runs) > 1:
        shares = run_shares(runs, model_fps)
        median_share = statistics.median(run["share"] for run in shares)
        report |= {"job_runs": shares, "median_share": round(median_share, 4),
                   "met": median_share >= TARGET_SHARE,
                   "met_rule": f"median over the runs of fps / limit >= {TARGET_SHARE}; "
                               "`job` is the first run"}
    return report


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def check_model_fps_json(path: Path | None) -> None:
    """Refuse an unreadable ``--model-fps-json`` before any clip is built, not after each one
    (whose preparation and host timings would be a device call's time for nothing)."""
    if path is None:
        return
    try:
        results = json.loads(path.read_text())["results"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise SystemExit(f"--model-fps-json {path}: not a bench.model_fps report "
                         f"({type(err).__name__}: {err})") from None
    if not isinstance(results, list):
        raise SystemExit(f"--model-fps-json {path}: 'results' is not a list")


def main(args: argparse.Namespace) -> dict[str, Any]:
    if args.job_runs < 1:
        raise SystemExit(f"--job-runs must be at least 1, got {args.job_runs}")
    check_model_fps_json(args.model_fps_json)
    ffmpeg = find_ffmpeg()
    use_cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    device = torch.device("cuda", 0) if use_cuda else torch.device("cpu")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="stylize-bench-"))
    report = codec_rates.describe_host(ffmpeg, device) | {
        "settings": {"ranks": args.ranks, "encoders": args.encoders or "default",
                     "compile": resolve_compile_mode(args.compile),
                     "encoder_threads": args.encoder_threads or "default",
                     "batch_size": args.batch_size or "default", "crf": args.crf,
                     "preset": args.preset,
                     "chunk_seconds": args.chunk_seconds or "default",
                     "chunk_codec": args.chunk_codec,
                     "max_waiting_batches": args.max_waiting_batches or "off",
                     "job_runs": args.job_runs},
        "clips": [],
    }
    return run_clips(args, report, workdir,
                     lambda name: bench_clip(args, name, workdir, ffmpeg, device))


def run_clips(args: argparse.Namespace, report: dict[str, Any], workdir: Path,
              bench_one: Callable[[str], dict[str, Any]]) -> dict[str, Any]:
    """Fill ``report["clips"]`` with ``bench_one`` of every clip, and its overall ``met``.

    A clip that fails is recorded with its error and the next one still runs; ``--out`` is
    rewritten after every clip, so a run stopped by a time limit keeps what it measured.
    ``workdir`` is removed at the end unless ``--workdir`` named it.
    """
    try:
        for name in args.clip or list(DEFAULT_CLIPS):
            try:
                report["clips"].append(bench_one(name))
            except Exception as err:  # noqa: BLE001 - recorded; the next clip still runs
                log(f"{name} failed: {type(err).__name__}: {err}")
                report["clips"].append({"clip": name, "error": f"{type(err).__name__}: {err}",
                                        "met": False})
            if args.out:
                jobdir.atomic_write_json(args.out, report)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    report["met"] = all(c["met"] for c in report["clips"])
    if args.out:
        jobdir.atomic_write_json(args.out, report)
    return report


if __name__ == "__main__":
    print(json.dumps(main(get_args_parser().parse_args()), indent=2))
