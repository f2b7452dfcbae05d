"""The GPU benchmarks' clips: built from a test pattern or given as a file, then cut into the
GPU job's input folder by the CPU side's own chunk plan and split (:mod:`tasks.media.chunking`,
:mod:`tasks.media.split`), which need nothing beyond the standard library, so they run on a
GPU host too.

A built clip needs no probe: its spec says what FFmpeg made of it (H.264 4:2:0 in MP4, no
colour tags, stream 0), and the split refuses it if the frame count is off. A given file is
probed with the product's :func:`tasks.media.probe`, which needs PyAV (not on the GPU host).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpu.ffmpeg import base_argv, run_ffmpeg
from gpu.jobdir import EncodeSettings, JobManifest
from tasks.media.chunking import ChunkPlan, SourceVideo, plan_chunks
from tasks.media.split import write_chunks


@dataclass(frozen=True)
class ClipSpec:
    """A benchmark clip built from a test pattern."""

    width: int
    height: int
    fps: int
    frames: int
    audio: bool

    def source_video(self) -> SourceVideo:
        """The video stream :func:`source_clip_argv` makes: untagged limited-range YUV 4:2:0
        (x264 writes no colour description unless asked), stream 0 of an MP4."""
        return SourceVideo(demuxer="mov", stream_index=0, frame_count=self.frames,
                           display_width=self.width, display_height=self.height, fps=self.fps,
                           pixel_family="yuv", tagged_matrix=None, full_range=False)


BUILT_CLIPS = {
    "1080p": ClipSpec(1920, 1080, 30, 900, audio=False),
    "square720": ClipSpec(720, 720, 30, 823, audio=True),
    # Enough chunks (45) to keep 4 GPUs' lanes busy past the first wave (bench.scaling).
    "1080p_90s": ClipSpec(1920, 1080, 30, 2700, audio=False),
}
SMOKE_CLIPS = {
    "1080p": ClipSpec(96, 54, 30, 45, audio=False),
    "square720": ClipSpec(72, 72, 30, 41, audio=True),
    "1080p_90s": ClipSpec(96, 54, 30, 135, audio=False),
}
DEFAULT_CLIPS = ("1080p", "square720")
"""The issue's two workloads: 30 s of 1080p30, and the 2019 reference's 823 frames of 720x720."""


def source_clip_argv(ffmpeg: str, target: Path, spec: ClipSpec) -> list[str]:
    """A moving test pattern encoded like a typical upload: H.264 yuv420p in MP4, AAC audio.

    ``testsrc2`` moves and has edges, gradients and text; the x264 settings are a camera's or
    phone's (B-frames, CRF 18), so decoding and splitting it costs what an upload costs.
    """
    seconds = spec.frames / spec.fps
    inputs = ["-f", "lavfi", "-i", f"testsrc2=size={spec.width}x{spec.height}:rate={spec.fps}"]
    if spec.audio:
        inputs += ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:d={seconds}"]
    audio_out = ["-map", "1:a:0", "-c:a", "aac", "-b:a", "128k"] if spec.audio else []
    return [*base_argv(ffmpeg), *inputs, "-map", "0:v:0", "-frames:v", str(spec.frames),
            "-c:v", "libx264", "-preset", "veryfast", "-crf", "18", "-pix_fmt", "yuv420p",
            *audio_out, "-movflags", "+faststart", str(target)]


@dataclass(frozen=True)
class BenchSource:
    """A benchmark's source file and what the split and the report need to know of it."""

    path: Path
    video: SourceVideo
    audio: bool
    pix_fmt: str

    def report(self) -> dict[str, Any]:
        video = self.video
        return {"file": self.path.name, "width": video.display_width,
                "height": video.display_height, "fps": video.fps, "frames": video.frame_count,
                "audio": self.audio, "pix_fmt": self.pix_fmt, "colorspace": video.tagged_matrix}


def build_clip(name: str, spec: ClipSpec, folder: Path, ffmpeg: str) -> BenchSource:
    """Clip ``name`` built by FFmpeg into ``folder``."""
    target = folder / f"{name}.mp4"
    run_ffmpeg(source_clip_argv(ffmpeg, target, spec))
    return BenchSource(target, spec.source_video(), spec.audio, "yuv420p")


def probed_source(path: Path) -> BenchSource:
    """A given video, described by the product's probe.

    Raises:
        SystemExit: PyAV (the probe's library) is not installed here.
    """
    try:
        from tasks.media.probing import probe
        from tasks.settings import LimitSettings
    except ImportError as err:
        raise SystemExit(f"--clip {path} needs the CPU side's probe, which needs {err.name}: "
                         "benchmark a built clip instead, or install the project here") from None
    found = probe(path, LimitSettings())
    return BenchSource(path, found.source_video, bool(found.audio), found.video.pixel_format)


def clip_source(name: str, smoke: bool, folder: Path, ffmpeg: str) -> BenchSource:
    """Built clip ``name`` (its tiny form with ``smoke``), else the video file ``name``."""
    built = SMOKE_CLIPS if smoke else BUILT_CLIPS
    return build_clip(name, built[name], folder, ffmpeg) if name in built else \
        probed_source(Path(name))


@dataclass(frozen=True)
class SplitClip:
    """A benchmark clip cut into the GPU job's input folder."""

    source: BenchSource
    input_dir: Path
    plan: ChunkPlan
    manifest: JobManifest


def split_clip(source: BenchSource, input_dir: Path, chunk_seconds: float, codec: str,
               encode: EncodeSettings, ffmpeg: str) -> SplitClip:
    """``source`` cut into ``codec`` chunks as the CPU side cuts an upload for the local backend.

    Raises:
        InsufficientDiskError: Raw chunks were asked for and do not fit the disk.
    """
    input_dir.mkdir(parents=True, exist_ok=True)
    plan = plan_chunks(source.video, chunk_seconds, codec, "local",
                       shutil.disk_usage(input_dir).free)
    manifest = write_chunks(source.path, source.video, input_dir, plan.chunk_frames,
                            plan.chunk_format, encode, ffmpeg)
    return SplitClip(source, input_dir, plan, manifest)
