"""Prefect tasks around the FFmpeg/PyAV functions of :mod:`tasks.media`.

Each task logs, makes one call and returns a typed result, so the flow reads as the pipeline.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from prefect import get_run_logger, task

from gpu.jobdir import EncodeSettings, JobManifest
from tasks import media
from tasks.media import MediaProbe, frames_per_chunk
from tasks.settings import ComputeSettings, LimitSettings


def check_frame_size(width: int, height: int, limits: LimitSettings) -> None:
    """Raises ``InvalidMediaError`` for frames smaller than ``limits.min_side`` on a side."""
    if min(width, height) < limits.min_side:
        raise media.InvalidMediaError(
            f"the video's frames are {width}x{height}; restyle needs at least "
            f"{limits.min_side} px on each side (RESTYLE_LIMITS__MIN_SIDE)")


@task(name="probe-video")
def probe_video(src: Path, limits: LimitSettings, label: str) -> MediaProbe:
    """Probe and validate the input; raises ``InvalidMediaError`` with the reason, naming the
    input by ``label`` (its blob) rather than by its local, hashed file name."""
    try:
        probe = media.probe(src, limits)
        check_frame_size(probe.video.display_width, probe.video.display_height, limits)
    except media.InvalidMediaError as err:
        raise media.InvalidMediaError(str(err).replace(src.name, label)) from None
    get_run_logger().info(
        "%r: %dx%d, %d frames, %d audio stream(s)", label, probe.video.display_width,
        probe.video.display_height, probe.video.frame_count, len(probe.audio),
    )
    return probe


@task(name="extract-audio")
def extract_audio(src: Path, probe: MediaProbe, out_dir: Path) -> list[Path]:
    """Copy every audio stream out of the input, untouched."""
    get_run_logger().info("extracting %d audio stream(s)", len(probe.audio))
    return media.extract_audio(src, probe, out_dir)


@task(name="split-video")
def split_video(src: Path, probe: MediaProbe, input_dir: Path, compute: ComputeSettings
                ) -> JobManifest:
    """Cut the video into frame-exact chunks for the GPU job, in the codec the settings pick."""
    fps = probe.video.average_fps or 30.0
    chunk_frames = frames_per_chunk(compute.chunk_seconds, fps)
    input_dir.mkdir(parents=True, exist_ok=True)
    codec, why = media.choose_chunk_codec(compute.chunk_codec, compute.backend,
                                          media.raw_chunks_bytes(probe.video),
                                          shutil.disk_usage(input_dir).free)
    get_run_logger().info("splitting into %s chunks (%s: %s) of at most %d frames, %s", codec,
                          compute.chunk_codec, why, chunk_frames, probe.video.chunk_format.reason)
    encode = EncodeSettings(crf=compute.crf, preset=compute.preset)
    return media.split_video(src, probe, input_dir, chunk_frames, encode, codec)


@task(name="reassemble-video")
def reassemble_video(probe: MediaProbe, stylized_dir: Path, audio: list[Path], out: Path) -> Path:
    """Join the stylized chunks at the source's timing and mux the audio back."""
    get_run_logger().info("reassembling %d frames with %d audio stream(s)",
                          probe.video.frame_count, len(audio))
    media.reassemble(probe, stylized_dir, audio, out)
    return out


@task(name="grab-frames")
def grab_frames(src: Path, result: Path, out_dir: Path, frame_index: int) -> tuple[Path, Path]:
    """One frame of the input and the same frame of the result, as small PNGs."""
    before = media.extract_frame_png(src, frame_index, out_dir / "before.png", max_width=480)
    after = media.extract_frame_png(result, frame_index, out_dir / "after.png", max_width=480)
    return before, after
