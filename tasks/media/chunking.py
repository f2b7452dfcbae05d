"""The whole chunk decision: pixel format, codec and length of the GPU job's input chunks, and
the FFmpeg command that cuts them.

Standard library only (and :mod:`gpu`, which is too): the CPU side (:mod:`tasks.media.split`)
cuts uploads with it, and the GPU benchmarks cut their clips with the very same decisions and
command on a GPU host that has none of the CPU side's packages (PyAV, pydantic, Prefect).

Pixel format (:func:`choose_chunk_format`), per source:

* ``yuv420p`` for YUV sources of even size whose YCbCr matrix the GPU job knows: the source's
  own samples at limited range, so the split converts nothing but range (and subsampling of
  4:2:2 or 4:4:4 sources), the files are smaller and decode faster, and the GPU converts to
  RGB with the matrix the manifest records.
* ``gbrp`` (planar RGB, converted here) for everything else: RGB sources, odd sizes (Ut Video
  4:2:0 needs even ones), and matrices the GPU job does not know.

Codec (:func:`choose_chunk_codec`): Ut Video (lossless, intra-only, ``left`` prediction, which
decodes faster than ``median``) or raw frames (``rawvideo``: each frame's planes back to back in
a headerless ``.yuv`` file, which the GPU job reads into its buffers without a decoder, for
several times the bytes). ``auto`` picks raw chunks for the local backend when they fit the
disk. Measurements behind these choices: docs/README.md.

Length (:func:`plan_chunks`): at most ``chunk_seconds`` of frames, shared evenly
(:func:`chunk_starts`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

from gpu.ffmpeg import base_argv, input_argv
from gpu.jobdir import CHUNK_CODECS, YCBCR_MATRICES, InputFormat
from gpu.video_io import frame_bytes

DEFAULT_CHUNK_SECONDS = 4.0
"""The longest chunk, in seconds, unless ``compute.chunk_seconds`` says otherwise."""
FALLBACK_FPS = 30.0
"""The rate chunk lengths assume for a source whose rate is unknown (a single frame)."""
RAW_CHUNKS_MAX_SHARE_OF_FREE_DISK = 0.5
"""``chunk_codec=auto`` writes raw chunks only when they fill at most this share of the free disk:
the rest is left for the stylized chunks, the result and whatever else shares the disk."""
# Linux refuses a single argument over 128 KiB (MAX_ARG_STRLEN); stay well below.
MAX_ARG_CHARS = 100_000


# FFmpeg's colorspace tags (``av_color_space_name``) of the matrices the GPU job knows, by the
# name the job manifest gives them: BT.601 has two tags for one matrix.
MATRIX_OF_TAG = {
    "bt709": "bt709",
    "bt470bg": "bt601",
    "smpte170m": "bt601",
    "bt601": "bt601",  # not a tag, but the name assumed_matrix gives untagged SD video
    "bt2020nc": "bt2020nc",
    "fcc": "fcc",
    "smpte240m": "smpte240m",
}
PIXEL_FAMILIES = ("yuv", "rgb", "other")
# Lines from which an untagged YUV source counts as HD, so BT.709.
HD_LINES = 720


class InsufficientDiskError(RuntimeError):
    """The chunks would not fit on the disk of the GPU job's input folder."""


def assumed_matrix(width: int, height: int) -> str:
    """The YCbCr matrix players assume for untagged YUV video: bt709 from 720 lines, else bt601.

    FFmpeg alone would always take bt601. Lines are the shorter side, so portrait video counts
    like its landscape twin.
    """
    return "bt709" if min(width, height) >= HD_LINES else "bt601"


@dataclass(frozen=True)
class ChunkFormat:
    """How :func:`build_split_argv` stores a source's pixels, and why.

    Attributes:
        pix_fmt: ``yuv420p`` or ``gbrp`` (see :data:`gpu.jobdir.CHUNK_PIX_FMTS`).
        matrix: ``yuv420p``: the YCbCr matrix of the chunks (the source's, a key of
            :data:`gpu.jobdir.YCBCR_MATRICES`), which the manifest records; None for ``gbrp``.
        full_range_source: ``yuv420p`` from a source tagged full range: the split converts it
            to limited range, which is all the GPU job reads.
        rgb_matrix: ``gbrp`` from an untagged YUV source: the matrix FFmpeg converts it with
            (FFmpeg follows the tags of tagged sources); None otherwise.
        reason: Why this format, in words, for logs.
        codec: ``utvideo`` or ``rawvideo`` (see :data:`gpu.jobdir.CHUNK_CODECS`): a setting,
            not a property of the source, so :func:`choose_chunk_format` leaves the default.
    """

    pix_fmt: str
    matrix: str | None = None
    full_range_source: bool = False
    rgb_matrix: str | None = None
    reason: str = ""
    codec: str = "utvideo"

    @property
    def input_format(self) -> InputFormat:
        """What the job manifest records about these chunks."""
        return InputFormat(pix_fmt=self.pix_fmt, matrix=self.matrix, codec=self.codec)

    @property
    def suffix(self) -> str:
        """The suffix of the chunk files, with its dot.

        Raises:
            ValueError: The codec is unknown.
        """
        if self.codec not in CHUNK_CODECS:
            raise ValueError(f"unknown chunk codec {self.codec!r}; expected one of "
                             f"{', '.join(CHUNK_CODECS)}")
        return CHUNK_CODECS[self.codec]


def choose_chunk_format(family: str, width: int, height: int, tagged_matrix: str | None,
                        full_range: bool) -> ChunkFormat:
    """The chunk format for a source: ``yuv420p`` when the GPU job can take its YUV, else ``gbrp``.

    Args:
        family: The source's decoded pixel format family, one of :data:`PIXEL_FAMILIES`.
        width: Display width (after rotation; Ut Video 4:2:0 needs it even).
        height: Display height.
        tagged_matrix: The source's colorspace tag as FFmpeg names it (``bt709``,
            ``smpte170m``, ...), None when it has none (then :func:`assumed_matrix` holds).
        full_range: The source is tagged full ("pc", "jpeg") range.
    """
    if family not in PIXEL_FAMILIES:
        raise ValueError(f"pixel format family {family!r} is not one of {PIXEL_FAMILIES}")
    untagged_yuv = family == "yuv" and tagged_matrix is None
    rgb = ChunkFormat("gbrp", rgb_matrix=assumed_matrix(width, height) if untagged_yuv else None)
    if family != "yuv":
        return replace(rgb, reason=f"gbrp: the source's pixels are {family}, not YUV")
    if width % 2 or height % 2:
        return replace(rgb, reason=f"gbrp: Ut Video 4:2:0 needs an even size, not "
                                   f"{width}x{height}")
    matrix = MATRIX_OF_TAG.get(tagged_matrix or assumed_matrix(width, height))
    if matrix not in YCBCR_MATRICES:
        return replace(rgb, reason=f"gbrp: the GPU job does not know the {tagged_matrix} "
                                   "matrix")
    origin = "tagged" if tagged_matrix else "assumed, untagged"
    return ChunkFormat("yuv420p", matrix=matrix, full_range_source=full_range,
                       reason=f"yuv420p: YUV source, {matrix} matrix ({origin}), "
                              f"{'full range made limited' if full_range else 'limited range'}")


def build_split_argv(
    ffmpeg: str,
    src: Path,
    demuxer: str,
    stream_index: int,
    chunk_starts: Sequence[int],
    pattern: Path,
    chunk_format: ChunkFormat,
) -> list[str]:
    """Cut video stream ``stream_index`` of ``src`` into lossless Ut Video Matroska chunks, or
    raw ones (``chunk_format.codec``).

    Every decoded frame is kept (``-fps_mode passthrough``) and rotation is applied (FFmpeg
    autorotates by default). Ut Video is lossless and intra-only, so the segment muxer can start
    a new chunk exactly at each frame number in ``chunk_starts``, and several times faster to
    encode and decode than FFV1 (which matters because the GPU job decodes the chunks on its
    CPU). Raw chunks are the segment muxer's ``rawvideo`` output: the converted frames' planes,
    with no header.

    ``yuv420p`` chunks keep the source's samples and matrix (FFmpeg's scaler does not convert
    between YCbCr matrices anyway); only full-range sources are converted, to limited range,
    and 4:2:2 or 4:4:4 ones subsampled. 4:2:0 chroma stays where the source sited it. ``gbrp``
    chunks are converted to RGB here, untagged YUV sources with ``chunk_format.rgb_matrix``.

    Args:
        ffmpeg: The FFmpeg binary.
        src: Source video.
        demuxer: Allowlisted demuxer of ``src``.
        stream_index: Absolute index of the video stream.
        chunk_starts: First frame number of every chunk after the first.
        pattern: Output pattern such as ``dir/%05d.mkv`` (``chunk_format.suffix``).
        chunk_format: The chunks' pixel format, from :func:`choose_chunk_format`, and codec.
    """
    if chunk_format.pix_fmt == "yuv420p":
        in_range = "in_range=pc:" if chunk_format.full_range_source else ""
        convert = ["-vf", f"scale={in_range}out_range=tv:flags=accurate_rnd"]
    elif chunk_format.pix_fmt == "gbrp":
        convert = [] if chunk_format.rgb_matrix is None else [
            "-vf", f"scale=in_color_matrix={chunk_format.rgb_matrix}"
                   ":flags=accurate_rnd+full_chroma_int",
        ]
    else:
        raise ValueError(f"unknown chunk pixel format {chunk_format.pix_fmt!r}")
    if chunk_format.codec == "utvideo":
        codec = ["-c:v", "utvideo", "-pred", "left", "-f", "segment",
                 "-segment_format", "matroska"]
    elif chunk_format.codec == "rawvideo":
        codec = ["-c:v", "rawvideo", "-f", "segment", "-segment_format", "rawvideo"]
    else:
        raise ValueError(f"unknown chunk codec {chunk_format.codec!r}")
    argv = [
        *base_argv(ffmpeg),
        *input_argv(src, demuxer),
        "-map", f"0:{stream_index}",
        "-map_metadata", "-1",
        "-map_chapters", "-1",
        "-fps_mode", "passthrough",
        *convert,
        "-pix_fmt", chunk_format.pix_fmt,
        *codec,
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


def frames_per_chunk(chunk_seconds: float, fps: float) -> int:
    """The most frames of one chunk, for chunks of at most ``chunk_seconds`` (at least one)."""
    return max(1, round(chunk_seconds * fps))


def chunk_starts(frame_count: int, chunk_frames: int) -> list[int]:
    """First frame number of every chunk but the first, for chunks of at most ``chunk_frames``.

    The frames are shared evenly (chunk lengths differ by at most one) rather than leaving a
    short last chunk: a chunk is the unit a rank claims, so with few chunks an uneven one sets
    the job's time (132 frames in chunks of at most 100 become 66 and 66, not 100 and 32).
    """
    if chunk_frames < 1:
        raise ValueError("chunk_frames must be at least 1")
    chunks = max(1, -(-frame_count // chunk_frames))
    return [index * frame_count // chunks for index in range(1, chunks)]


@dataclass(frozen=True)
class SourceVideo:
    """What the chunk decisions and the split need to know about a source's video stream.

    :attr:`tasks.media.MediaProbe.source_video` gives it for a probed upload; a benchmark that
    built its own clip may state it (the split checks the frame count it states).

    Attributes:
        demuxer: The allowlisted demuxer of the file (:data:`gpu.ffmpeg.ALLOWED_DEMUXERS`).
        stream_index: Absolute index of the video stream.
        frame_count: Number of frames.
        display_width: Width as shown, after rotation (the chunks' width).
        display_height: Height as shown, after rotation.
        fps: Average frames per second; 0 when unknown.
        pixel_family: ``yuv``, ``rgb`` or ``other``, one of :data:`PIXEL_FAMILIES`.
        tagged_matrix: The YCbCr matrix the stream tags, by FFmpeg's name; None when untagged.
        full_range: The stream is tagged full range.
    """

    demuxer: str
    stream_index: int
    frame_count: int
    display_width: int
    display_height: int
    fps: float
    pixel_family: str
    tagged_matrix: str | None
    full_range: bool

    @property
    def chunk_format(self) -> ChunkFormat:
        """How the split stores this stream's pixels for the GPU job."""
        return choose_chunk_format(self.pixel_family, self.display_width, self.display_height,
                                   self.tagged_matrix, self.full_range)


class ChunkedVideo(Protocol):
    """A video stream whose chunks' size can be told: :class:`SourceVideo`, or a probe's."""

    frame_count: int
    display_width: int
    display_height: int

    @property
    def chunk_format(self) -> ChunkFormat: ...


def raw_chunks_bytes(video: ChunkedVideo) -> int:
    """Bytes the raw chunks of ``video`` take: every frame in its chunk pixel format."""
    fmt = video.chunk_format
    return video.frame_count * frame_bytes(fmt.pix_fmt, video.display_width, video.display_height)


def choose_chunk_codec(requested: str, backend: str, raw_bytes: int, free_bytes: int
                       ) -> tuple[str, str]:
    """The chunk codec for the ``compute.chunk_codec`` setting, and why, in words.

    ``auto`` picks raw chunks for the local backend, where they never leave the disk and spare
    the GPU host's CPUs the decoding, unless they would fill more than
    :data:`RAW_CHUNKS_MAX_SHARE_OF_FREE_DISK` of the free disk; Ut Video otherwise, and always
    for Azure ML, whose chunks are uploaded to Blob Storage.

    Args:
        requested: ``auto``, ``utvideo`` or ``rawvideo``.
        backend: ``local`` or ``azureml``.
        raw_bytes: What the raw chunks would take (:func:`raw_chunks_bytes`).
        free_bytes: Free bytes on the disk of the job's input folder.

    Raises:
        InsufficientDiskError: ``rawvideo`` was asked for and the raw chunks exceed the free disk.
    """
    need, free = f"{raw_bytes / 1e9:.2f} GB", f"{free_bytes / 1e9:.2f} GB"
    if requested == "rawvideo" and raw_bytes > free_bytes:
        raise InsufficientDiskError(
            f"raw chunks need {need} but the job's input folder has {free} free; free some "
            f"disk or set RESTYLE_COMPUTE__CHUNK_CODEC=utvideo (compressed, lossless)")
    if requested != "auto":
        return requested, "as set"
    if backend != "local":
        return "utvideo", f"{backend} uploads its chunks, and Ut Video is the fewer bytes"
    if raw_bytes <= RAW_CHUNKS_MAX_SHARE_OF_FREE_DISK * free_bytes:
        return "rawvideo", f"raw chunks take {need} of {free} free"
    return "utvideo", f"raw chunks would take {need} of only {free} free"


@dataclass(frozen=True)
class ChunkPlan:
    """How one source is cut: the most frames of a chunk, and the chunks' format and codec.

    Attributes:
        chunk_frames: The most frames in one chunk.
        chunk_format: Pixel format and codec of the chunks.
        codec_reason: Why this codec, in words.
    """

    chunk_frames: int
    chunk_format: ChunkFormat
    codec_reason: str

    def describe(self) -> str:
        """The plan in words, for logs."""
        return (f"{self.chunk_format.codec} chunks ({self.codec_reason}) of at most "
                f"{self.chunk_frames} frames, {self.chunk_format.reason}")


def plan_chunks(video: SourceVideo, chunk_seconds: float, requested_codec: str, backend: str,
                free_bytes: int) -> ChunkPlan:
    """The chunks for ``video``: at most ``chunk_seconds`` long, in the codec the settings pick.

    Args:
        video: The source's video stream.
        chunk_seconds: The longest chunk (``compute.chunk_seconds``).
        requested_codec: ``compute.chunk_codec``: ``auto``, ``utvideo`` or ``rawvideo``.
        backend: ``local`` or ``azureml``.
        free_bytes: Free bytes on the disk of the job's input folder.

    Raises:
        InsufficientDiskError: Raw chunks were asked for and do not fit.
    """
    codec, why = choose_chunk_codec(requested_codec, backend, raw_chunks_bytes(video), free_bytes)
    return ChunkPlan(chunk_frames=frames_per_chunk(chunk_seconds, video.fps or FALLBACK_FPS),
                     chunk_format=replace(video.chunk_format, codec=codec), codec_reason=why)
