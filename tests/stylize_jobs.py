"""Helpers that build GPU job folders like the CPU side writes, run the job and read its output
(shared by the GPU job's tests)."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import imageio_ffmpeg
import numpy as np

from gpu import jobdir
from gpu.ffmpeg import run_ffmpeg
from gpu.jobdir import ChunkSpec, EncodeSettings, InputFormat, JobManifest
from gpu.video_io import decode_argv, even_size

REPO = Path(__file__).resolve().parent.parent
FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()
MPIEXEC = Path(sys.executable).parent / "mpiexec"
LAUNCH_TIMEOUT = 180
RGB_CHUNKS = InputFormat()


def make_job(folder: Path, width: int, height: int, chunk_frames: list[int],
             model_path: Path, input_format: InputFormat = RGB_CHUNKS,
             look: str = "") -> JobManifest:
    """A job folder like the CPU side writes, cut from one lavfi test clip: FFV1 planar RGB
    chunks, or Ut Video YUV 4:2:0 ones in ``input_format.matrix`` at limited range.

    ``look`` is an FFmpeg filter chain applied to the test pattern first (e.g. to soften its
    colours)."""
    chunks, first = [], 0
    if input_format.pix_fmt == "gbrp":
        codec = ["-c:v", "ffv1", "-pix_fmt", "gbrp"]
    else:
        matrix = {"bt601": "smpte170m"}.get(input_format.matrix, input_format.matrix)
        codec = ["-vf", f"scale=out_color_matrix={matrix}:out_range=tv:flags=accurate_rnd",
                 "-c:v", "utvideo", "-pred", "left", "-pix_fmt", "yuv420p"]
    for index, frames in enumerate(chunk_frames):
        chunk = ChunkSpec(index=index, file=f"chunks/{index:05d}.mkv", frames=frames,
                          first_frame=first)
        (folder / "chunks").mkdir(parents=True, exist_ok=True)
        source = (f"testsrc=size={width}x{height}:rate=25,"
                  f"trim=start_frame={first}:end_frame={first + frames},setpts=PTS-STARTPTS"
                  + (f",{look}" if look else ""))
        run_ffmpeg([FFMPEG, "-v", "error", "-f", "lavfi", "-i", source, *codec,
                    "-f", "matroska", str(folder / chunk.file)])
        chunks.append(chunk)
        first += frames
    manifest = JobManifest(width=width, height=height, total_frames=first, chunks=chunks,
                           encode=EncodeSettings(crf=18, preset="ultrafast"),
                           input_format=input_format)
    jobdir.write_manifest(folder, manifest)
    (folder / jobdir.MODEL_NAME).write_bytes(model_path.read_bytes())
    return manifest


def raw_twin(source_dir: Path, folder: Path, manifest: JobManifest) -> JobManifest:
    """A copy of a job whose chunks are raw: each holds the planes FFmpeg decodes the source
    chunk to, as the CPU side's ``rawvideo`` split writes them."""
    chunks = []
    for chunk in manifest.chunks:
        raw = replace(chunk, file=str(Path(chunk.file).with_suffix(".yuv")))
        (folder / raw.file).parent.mkdir(parents=True, exist_ok=True)
        (folder / raw.file).write_bytes(run_ffmpeg(decode_argv(
            FFMPEG, source_dir / chunk.file, manifest.input_format.pix_fmt)))
        chunks.append(raw)
    twin = replace(manifest, chunks=chunks,
                   input_format=replace(manifest.input_format, codec="rawvideo"))
    jobdir.write_manifest(folder, twin)
    (folder / jobdir.MODEL_NAME).write_bytes((source_dir / jobdir.MODEL_NAME).read_bytes())
    return twin


def launch(input_dir: Path, output_dir: Path, ranks: int | None, *extra: str,
           model: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run the job under ``mpiexec -n ranks``, or as a plain process when ``ranks`` is None."""
    argv = [sys.executable, "-m", "gpu.stylize", "--input", str(input_dir),
            "--output", str(output_dir), "--device", "cpu", "--threads", "1",
            "--batch-size", "3", *extra]
    if model is not None:
        argv += ["--model", str(model)]
    if ranks is not None:
        launcher = [str(MPIEXEC), "-n", str(ranks), "--oversubscribe"]
        if os.geteuid() == 0:
            launcher.append("--allow-run-as-root")
        argv = launcher + argv
    return subprocess.run(argv, cwd=REPO, capture_output=True, text=True,
                          timeout=LAUNCH_TIMEOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def ok(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def decode(path: Path, width: int, height: int) -> np.ndarray:
    """All frames of ``path`` as (N, height, width, 3) uint8."""
    data = run_ffmpeg(decode_argv(FFMPEG, path, "rgb24"))
    assert len(data) % (width * height * 3) == 0, f"{path} is not {width}x{height}"
    return np.frombuffer(data, np.uint8).reshape(-1, height, width, 3)


def decode_output(output_dir: Path, manifest: JobManifest, chunk: ChunkSpec) -> np.ndarray:
    """A stylized chunk's frames, cropped back from the even coded size to the display size."""
    frames = decode(jobdir.output_chunk_path(output_dir, chunk), *even_size(manifest.width,
                                                                             manifest.height))
    return frames[:, :manifest.height, :manifest.width]


def parameter_sets(path: Path) -> list[bytes]:
    """The SPS and PPS NAL units of an H.264 file, in Annex B order."""
    stream = run_ffmpeg([FFMPEG, "-v", "error", "-i", str(path), "-map", "0:v:0", "-c:v", "copy",
                         "-bsf:v", "h264_mp4toannexb", "-f", "h264", "pipe:1"])
    units = [u.lstrip(b"\x00") for u in stream.split(b"\x00\x00\x01")]
    return [u for u in units if u and u[0] & 0x1F in (7, 8)]
