"""Cut a video into the GPU job's chunks, check them, and write the job's manifest.

Standard library only (with :mod:`gpu`): the CPU side splits uploads with it, and the GPU
benchmarks split their clips with it on a GPU host without PyAV. The chunks are checked with
FFmpeg itself: Ut Video ones by their packet listing (nothing decoded) and their first frame
decoded in its own pixel format; raw ones, which have no header, by their size.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import replace
from pathlib import Path

from gpu.ffmpeg import (
    FFmpegError,
    find_ffmpeg,
    packet_listing_argv,
    parse_packet_listing,
    run_ffmpeg,
)
from gpu.jobdir import CHUNKS_DIR, ChunkSpec, EncodeSettings, JobManifest, write_manifest
from gpu.video_io import frame_bytes, raw_chunk_frames
from tasks.media.chunking import ChunkFormat, SourceVideo, build_split_argv, chunk_starts
from tasks.media.info import MediaProbe

FIRST_FRAME_FILE = "first-frame.raw"
"""Where a chunk check decodes a chunk's first frame, inside the split's temporary folder."""


def split_video(
    src: Path, probe: MediaProbe, input_dir: Path, chunk_frames: int, encode: EncodeSettings,
    codec: str = "utvideo",
) -> JobManifest:
    """Cut a probed upload into chunks of at most ``chunk_frames`` in ``codec``:
    :func:`write_chunks` for ``probe.source_video`` in its chunk format."""
    video = probe.source_video
    return write_chunks(src, video, input_dir, chunk_frames,
                        replace(video.chunk_format, codec=codec), encode)


def write_chunks(
    src: Path, video: SourceVideo, input_dir: Path, chunk_frames: int,
    chunk_format: ChunkFormat, encode: EncodeSettings, ffmpeg: str | None = None,
) -> JobManifest:
    """Cut ``src`` into frame-exact lossless chunks and write the GPU job's manifest.

    Chunks are Ut Video (lossless, intra-only) or raw frames, in display orientation, in
    ``chunk_format`` (normally ``video.chunk_format`` with the codec of the plan, see
    :mod:`tasks.media.chunking`), written to a temporary folder and moved to
    ``input_dir/chunks`` only once their frame counts add up to ``video.frame_count``. The
    manifest's ``input_format`` records pixel format, matrix and codec, so the GPU job converts
    to RGB itself.

    Args:
        src: The source.
        video: Its video stream.
        input_dir: The GPU job's input folder.
        chunk_frames: The most frames in one chunk; the frames are shared evenly
            (:func:`tasks.media.chunking.chunk_starts`).
        chunk_format: The chunks' pixel format and codec.
        encode: How the GPU job encodes the stylized chunks.
        ffmpeg: The FFmpeg binary (default: :func:`gpu.ffmpeg.find_ffmpeg`).

    Returns:
        The manifest, also written to ``input_dir/job.json``.

    Raises:
        FFmpegError: FFmpeg failed.
        ValueError: The codec is unknown (before any work).
        RuntimeError: The chunks do not hold exactly the source's frames.
    """
    suffix = chunk_format.suffix  # refuses an unknown codec before any work
    ffmpeg = ffmpeg or find_ffmpeg()
    input_dir.mkdir(parents=True, exist_ok=True)
    final_dir = input_dir / CHUNKS_DIR
    work_dir = Path(tempfile.mkdtemp(prefix=".chunks-", dir=input_dir))
    try:
        run_ffmpeg(build_split_argv(ffmpeg, src, video.demuxer, video.stream_index,
                                    chunk_starts(video.frame_count, chunk_frames),
                                    work_dir / f"%05d{suffix}", chunk_format))
        chunks = []
        first_frame = 0
        for index, path in enumerate(sorted(work_dir.glob(f"*{suffix}"))):
            if path.name != f"{index:05d}{suffix}":
                raise RuntimeError(f"unexpected chunk file {path.name}")
            frames = read_back_chunk(ffmpeg, path, video, chunk_format)
            chunks.append(ChunkSpec(index=index, file=f"{CHUNKS_DIR}/{path.name}",
                                    frames=frames, first_frame=first_frame))
            first_frame += frames
        if first_frame != video.frame_count:
            raise RuntimeError(
                f"splitting {src.name} produced {first_frame} frames in {len(chunks)} chunks, "
                f"but the source has {video.frame_count}; refusing to continue"
            )
        if final_dir.exists():
            _remove_tree(final_dir)
        os.replace(work_dir, final_dir)
    finally:
        if work_dir.exists():
            _remove_tree(work_dir)
    manifest = JobManifest(width=video.display_width, height=video.display_height,
                           total_frames=video.frame_count, chunks=chunks, encode=encode,
                           input_format=chunk_format.input_format)
    write_manifest(input_dir, manifest)
    return manifest


def chunk_check_argv(ffmpeg: str, chunk: Path, first_frame: Path) -> list[str]:
    """List ``chunk``'s packets on stdout (:func:`gpu.ffmpeg.packet_listing_argv`) and, in the
    same run, decode its first frame in its own pixel format into ``first_frame``."""
    return [*packet_listing_argv(ffmpeg, chunk), "-map", "0:v:0", "-frames:v", "1",
            "-c:v", "rawvideo", "-f", "rawvideo", str(first_frame)]


def read_back_chunk(ffmpeg: str, path: Path, video: SourceVideo,
                    chunk_format: ChunkFormat) -> int:
    """Frames of a chunk the split wrote, checked to be of the expected size and format.

    Raises:
        RuntimeError: The chunk is not what the split should have written.
    """
    size = (video.display_width, video.display_height)
    if chunk_format.codec == "rawvideo":
        try:
            return raw_chunk_frames(path, chunk_format.pix_fmt, *size)
        except ValueError as err:
            raise RuntimeError(str(err)) from err
    first_frame = path.with_name(FIRST_FRAME_FILE)
    try:
        listing = parse_packet_listing(run_ffmpeg(chunk_check_argv(ffmpeg, path, first_frame)))
        decoded = first_frame.stat().st_size
    except (FFmpegError, FileNotFoundError) as err:
        raise RuntimeError(f"chunk {path.name} cannot be read back: {err}") from err
    finally:
        first_frame.unlink(missing_ok=True)
    if (listing.width, listing.height) != size:
        raise RuntimeError(f"chunk {path.name} is {listing.width}x{listing.height}, expected "
                           f"{size[0]}x{size[1]}")
    expected = frame_bytes(chunk_format.pix_fmt, *size)
    if decoded != expected:
        raise RuntimeError(f"chunk {path.name} decodes to {decoded}-byte frames, not the "
                           f"{expected} bytes of {chunk_format.pix_fmt} {size[0]}x{size[1]}")
    return listing.packets


def _remove_tree(path: Path) -> None:
    for child in path.iterdir():
        child.unlink()
    path.rmdir()
