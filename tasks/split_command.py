"""The FFmpeg command that cuts a video into the GPU job's chunks, and the input allowlists.

Standard library only: the CPU side (:mod:`tasks.media`) cuts uploads with it, and the GPU
benchmarks (:mod:`bench.stylize_job`) cut their clips with the very same command on a GPU host
that has none of the CPU side's packages (PyAV, pydantic, Prefect).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

# Demuxers of plain media containers. Anything else (hls, concat, image2, tee, data, ...) can
# reference other files or URLs, or is not a video container at all.
ALLOWED_DEMUXERS = ("mov", "matroska", "avi", "mpegts", "mpeg", "flv", "ogg", "asf", "nut")
FORMAT_WHITELIST = ",".join(ALLOWED_DEMUXERS)
# Protocols the FFmpeg CLI may use.
CLI_PROTOCOLS = "file,pipe"
# Linux refuses a single argument over 128 KiB (MAX_ARG_STRLEN); stay well below.
MAX_ARG_CHARS = 100_000


class InvalidMediaError(ValueError):
    """The input is not a video this pipeline accepts; the message says why."""


def base_argv(ffmpeg: str) -> list[str]:
    """FFmpeg quiet, non-interactive, overwriting its (temporary) outputs."""
    return [ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", "-y"]


def input_argv(src: Path, demuxer: str) -> list[str]:
    """Options that open untrusted ``src`` with exactly ``demuxer`` over local files only.

    Forcing ``-f`` stops FFmpeg from re-probing the file into a playlist demuxer, and the
    whitelists refuse any other demuxer or protocol a nested reference might ask for.
    """
    if demuxer not in ALLOWED_DEMUXERS:
        raise InvalidMediaError(f"demuxer {demuxer!r} is not allowed")
    return [
        "-protocol_whitelist", CLI_PROTOCOLS,
        "-format_whitelist", FORMAT_WHITELIST,
        "-f", demuxer,
        "-i", str(src),
    ]  # fmt: skip


def build_split_argv(
    ffmpeg: str,
    src: Path,
    demuxer: str,
    stream_index: int,
    chunk_starts: Sequence[int],
    pattern: Path,
    assumed_matrix: str | None = None,
) -> list[str]:
    """Cut video stream ``stream_index`` of ``src`` into lossless RGB Matroska chunks.

    Every decoded frame is kept (``-fps_mode passthrough``) and rotation is applied (FFmpeg
    autorotates by default). The codec is Ut Video on planar RGB (``gbrp``): lossless and
    intra-only, so the segment muxer can start a new chunk exactly at each frame number in
    ``chunk_starts``, and several times faster to encode and decode than FFV1 (which matters
    because the GPU job decodes the chunks on its CPU).

    Args:
        ffmpeg: The FFmpeg binary.
        src: Source video.
        demuxer: Allowlisted demuxer of ``src``.
        stream_index: Absolute index of the video stream.
        chunk_starts: First frame number of every chunk after the first.
        pattern: Output pattern such as ``dir/%05d.mkv``.
        assumed_matrix: YCbCr matrix to convert an untagged source with (see
            :attr:`tasks.media.VideoStreamInfo.assumed_matrix`); None lets FFmpeg follow the tags.
    """
    convert = [] if assumed_matrix is None else [
        "-vf", f"scale=in_color_matrix={assumed_matrix}:flags=accurate_rnd+full_chroma_int",
    ]
    argv = [
        *base_argv(ffmpeg),
        *input_argv(src, demuxer),
        "-map", f"0:{stream_index}",
        "-map_metadata", "-1",
        "-map_chapters", "-1",
        "-fps_mode", "passthrough",
        *convert,
        "-pix_fmt", "gbrp",
        "-c:v", "utvideo",
        "-pred", "median",
        "-f", "segment",
        "-segment_format", "matroska",
        "-reset_timestamps", "1",
    ]  # fmt: skip
    if chunk_starts:
        frames = ",".join(str(n) for n in chunk_starts)
        if len(frames) > MAX_ARG_CHARS:
            raise ValueError(
                f"{len(chunk_starts) + 1} chunks do not fit on one FFmpeg command line; "
                "use longer chunks"
            )
        argv += ["-segment_frames", frames]
    else:
        # One chunk: a segment length longer than any accepted input.
        argv += ["-segment_time", "1000000"]
    return [*argv, str(pattern)]


def chunk_starts(frame_count: int, chunk_frames: int) -> list[int]:
    """First frame number of every chunk but the first."""
    if chunk_frames < 1:
        raise ValueError("chunk_frames must be at least 1")
    return list(range(chunk_frames, frame_count, chunk_frames))
