"""The host's side of the GPU job's workload: timed FFmpeg decode and encode of its chunks,
laid out as the job runs them, on frames the model stylized, and the host's description.

Rates are measured with the command lines ``gpu.stylize`` itself runs
(:func:`gpu.video_io.decode_argv` to the chunks' own planar format with the job's decoder
threads, :class:`gpu.video_io.FrameWriter`), so they are the host's capacity for this job's
work, not FFmpeg's in general. Raw chunks are read as the job reads them, with
:class:`gpu.video_io.RawFrameReader`.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import queue
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gpu.ffmpeg import run_ffmpeg
from gpu.jobdir import JobManifest
from gpu.model import load_style_model
from gpu.stylize import (
    FrameLayout,
    Stylizer,
    default_decoder_threads,
    default_encoders,
    open_chunk_reader,
)
from gpu.video_io import (
    FrameWriter,
    RawFrameReader,
    decode_argv,
    even_size,
    frame_bytes,
    yuv420_frame_bytes,
)
from tasks.repo import REPO_ROOT

SAMPLE_FRAMES = {"cuda": 60, "cpu": 12}
"""Frames the model stylizes for the encode-rate measurements (repeated as needed); fewer on
the CPU, where stylizing them takes seconds."""
RAW_READ_FRAMES = 8
"""Frames per read from a raw chunk: the job's default batch on CUDA."""
DECODE_METHODS = {
    "utvideo": "ffmpeg decode to the chunks' own planar format, output discarded",
    "rawvideo": f"readinto a reused buffer of {RAW_READ_FRAMES} frames, as the job reads",
}
"""What :func:`decode_rate` measures for each chunk codec, for reports."""


def _concurrently(jobs: list[Callable[[], None]], processes: int) -> float:
    """Run ``jobs`` with at most ``processes`` at a time; return the wall seconds."""
    pending = list(reversed(jobs))
    lock = threading.Lock()
    errors: list[BaseException] = []

    def worker() -> None:
        while True:
            with lock:
                if not pending or errors:
                    return
                job = pending.pop()
            try:
                job()
            except BaseException as err:  # noqa: BLE001 - re-raised below
                errors.append(err)

    started = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(max(1, processes))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return time.perf_counter() - started


def decode_rate(ffmpeg: str, input_dir: Path, manifest: JobManifest, processes: int,
                threads: int) -> float:
    """Frames/s getting the raw frames of the job's chunks as the job does, ``processes`` chunks
    at a time (see :data:`DECODE_METHODS`).

    Ut Video chunks: FFmpeg decodes each to the chunks' own planar format (no conversion) with
    ``threads`` decoder threads, output discarded. Raw chunks: each is read into one of
    ``processes`` reused buffers (plain memory: the job's are pinned under CUDA, which reads
    into just as fast); ``threads`` does not apply.
    """
    fmt = manifest.input_format
    chunks = [input_dir / c.file for c in manifest.chunks]

    def decode(chunk: Path) -> Callable[[], None]:
        def run() -> None:
            run_ffmpeg(decode_argv(ffmpeg, chunk, fmt.pix_fmt, threads), discard_stdout=True)
        return run

    buffers: queue.SimpleQueue[np.ndarray] = queue.SimpleQueue()

    def read(chunk: Path) -> Callable[[], None]:
        def run() -> None:
            buffer = buffers.get()
            try:
                with RawFrameReader(chunk, manifest.width, manifest.height,
                                    fmt.pix_fmt) as reader:
                    while reader.read_into(buffer) == len(buffer):
                        pass
            finally:
                buffers.put(buffer)
        return run

    if fmt.codec == "rawvideo":
        for _ in range(processes):
            buffer = np.empty((RAW_READ_FRAMES, frame_bytes(fmt.pix_fmt, manifest.width,
                                                             manifest.height)), np.uint8)
            buffer.fill(0)  # faulted in now, as the job's pinned buffers are: not timed
            buffers.put(buffer)
        jobs = [read(c) for c in chunks]
    else:
        jobs = [decode(c) for c in chunks]
    return manifest.total_frames / _concurrently(jobs, processes)


def encode_rate(ffmpeg: str, sample: np.ndarray, width: int, height: int, crf: int, preset: str,
                processes: int, threads: int, frames: int, workdir: Path) -> float:
    """Frames/s of ``processes`` encoders at once, each fed ``frames`` frames through a pipe
    (``sample``, YUV 4:2:0 rows, repeated) with the job's command line.

    ``threads`` is each encoder's, 0 leaving it to x264 (1.5 per core). The outputs go to files in
    ``workdir``, deleted afterwards (FFmpeg will not overwrite /dev/null without ``-y``, which
    the job's command line does not have).
    """

    def encode(target: Path) -> Callable[[], None]:
        def run() -> None:
            with FrameWriter(ffmpeg, target, width, height, crf, preset, threads) as writer:
                written = 0
                while written < frames:
                    count = min(len(sample), frames - written)
                    writer.write(sample[:count])
                    written += count
                writer.close()
            target.unlink()
        return run

    targets = [workdir / f"rate-{preset}-{n}.mkv" for n in range(processes)]
    return processes * frames / _concurrently([encode(t) for t in targets], processes)


def encode_quality(ffmpeg: str, sample: np.ndarray, width: int, height: int, crf: int,
                   preset: str, workdir: Path) -> tuple[float, float]:
    """``sample`` encoded as the job encodes it, decoded again and compared with itself.

    Returns:
        The PSNR in dB over Y, U and V (FFmpeg's ``psnr`` filter's average: of the mean squared
        error over all frames) and the encoded bytes per frame.
    """
    encoded = workdir / f"sample-{preset}.mkv"
    with FrameWriter(ffmpeg, encoded, width, height, crf, preset) as writer:
        writer.write(sample)
        writer.close()
    decoded = np.frombuffer(run_ffmpeg(decode_argv(ffmpeg, encoded, "yuv420p")), np.uint8)
    bytes_per_frame = encoded.stat().st_size / len(sample)
    encoded.unlink()
    return psnr_db(sample, decoded.reshape(sample.shape)), bytes_per_frame


def psnr_db(reference: np.ndarray, test: np.ndarray) -> float:
    """PSNR of 8-bit ``test`` against ``reference``, rows of frames: ``10 log10(255^2 / MSE)``
    with the per-frame mean squared errors averaged over the frames (inf when identical)."""
    errors = (reference.astype(np.float64) - test.astype(np.float64)) ** 2
    mse = float(errors.reshape(len(reference), -1).mean(axis=1).mean())
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


def lane_layout(args: argparse.Namespace) -> tuple[int, int, int]:
    """This host's cores, the job's chunks in flight over all ranks, and each decoder's threads."""
    cores = len(os.sched_getaffinity(0))
    threads = args.threads or max(1, cores // args.ranks)
    encoders = args.encoders or default_encoders(threads)
    return cores, encoders * args.ranks, default_decoder_threads(threads)


def encode_layouts(args: argparse.Namespace) -> dict[str, int]:
    """x264 threads of each encoder in the two layouts the host's rate is measured in."""
    cores, lanes, _ = lane_layout(args)
    return {"all_cores": cores, "shared": max(1, cores // lanes)}


def x264_rate(args: argparse.Namespace, manifest: JobManifest, sample: np.ndarray,
              workdir: Path, ffmpeg: str, preset: str, threads_each: int) -> float:
    """Frames/s of as many x264 processes at once as the job has chunks in flight."""
    _, lanes, _ = lane_layout(args)
    width, height = even_size(manifest.width, manifest.height)
    return encode_rate(ffmpeg, sample, width, height, args.crf, preset,
                                   processes=lanes, threads=threads_each,
                                   frames=max(len(sample), args.rate_frames // lanes),
                                   workdir=workdir)


def measure_host(args: argparse.Namespace, manifest: JobManifest, input_dir: Path,
                 sample: np.ndarray, workdir: Path, ffmpeg: str) -> dict[str, Any]:
    """Decode and encode rates of this host for the job's chunks, laid out as the job runs.

    Decoding: as many decoders at once as the job has chunks in flight, each with the job's
    decoder threads, to the chunks' own planar format; raw chunks are read instead, as many at
    once (``decode_method`` says which). Encoding: as many x264 processes at once,
    each once with every core's worth of threads (``all_cores``) and once with the cores shared
    out among them (``shared``; the job gives its encoders every core by default); the reference
    ``fps`` is the faster of the two.
    """
    cores, lanes, decoder_threads = lane_layout(args)
    decode_fps = decode_rate(ffmpeg, input_dir, manifest, lanes, decoder_threads)
    width, height = even_size(manifest.width, manifest.height)
    presets = [args.preset] + [p for p in args.compare_presets.split(",")
                               if p and p != args.preset]
    layouts = encode_layouts(args)
    encode = {}
    for preset in presets:
        rates = {name: x264_rate(args, manifest, sample, workdir, ffmpeg, preset, threads_each)
                 for name, threads_each in layouts.items()}
        psnr, bytes_per_frame = encode_quality(ffmpeg, sample, width, height,
                                                           args.crf, preset, workdir)
        encode[preset] = {
            "parallel_processes": lanes,
            **{f"{name}_fps": round(rate, 2) for name, rate in rates.items()},
            **{f"{name}_threads_each": layouts[name] for name in rates},
            "fps": round(max(rates.values()), 2),
            "fps_from": max(rates, key=lambda name: rates[name]),
            "psnr_db": round(psnr, 2),
            "kbit_per_frame": round(bytes_per_frame * 8 / 1000, 2),
        }
    return {"decode_fps": round(decode_fps, 2), "decode_processes": lanes,
            "decode_pix_fmt": manifest.input_format.pix_fmt,
            "decode_codec": manifest.input_format.codec,
            "decode_method": DECODE_METHODS[manifest.input_format.codec],
            "decoder_threads_each": decoder_threads, "crf": args.crf, "encode": encode}


def stylized_sample(model_path: Path, chunk: Path, manifest: JobManifest,
                    device: torch.device, ffmpeg: str) -> np.ndarray:
    """The first frames of ``chunk`` stylized as the job does it, as YUV 4:2:0 rows."""
    layout = FrameLayout.of(manifest)
    width, height = layout.width, layout.height
    frames = np.empty((SAMPLE_FRAMES[device.type], layout.frame_bytes), np.uint8)
    with open_chunk_reader(ffmpeg, chunk, layout) as reader:
        count = reader.read_into(frames)
    stylizer = Stylizer(load_style_model(model_path), device, layout)
    out = torch.empty((len(frames), yuv420_frame_bytes(*even_size(width, height))),
                      dtype=torch.uint8)
    stylizer(torch.from_numpy(frames), out, count)
    del stylizer
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return out[:count].numpy()


def git_commit() -> str | None:
    """The checked-out commit, when this is a git checkout and git is installed."""
    try:
        proc = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT,
                              capture_output=True, text=True)
    except OSError:
        return None
    return proc.stdout.strip() or None


def describe_host(ffmpeg: str, device: torch.device) -> dict[str, Any]:
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    version = run_ffmpeg([ffmpeg, "-hide_banner", "-version"]).decode().splitlines()[0]
    return {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "commit": git_commit(),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "host_cores": len(os.sched_getaffinity(0)),
        "cpu": cpu,
        "torch": torch.__version__,
        "ffmpeg": version,
    }
