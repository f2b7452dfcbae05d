"""FFmpeg pipes for the GPU job: raw planar frames in from a lossless chunk, H.264 out.

Command lines are built by pure functions (tested as lists); :class:`FrameReader` and
:class:`FrameWriter` run them as child processes and raise :class:`FFmpegError`, carrying
FFmpeg's stderr, when one fails. Frames come in as ``uint8`` rows shaped ``(N, frame_bytes)``
in the chunk's own planar pixel format (``yuv420p`` or ``gbrp``: FFmpeg only decodes, it
neither converts nor packs; the GPU job converts to RGB on its device) and go out as planar
YUV 4:2:0 rows shaped ``(N, yuv420_frame_bytes)``. Raw chunks, which already hold exactly
those rows, need no FFmpeg: :class:`RawFrameReader` reads them straight into the same buffers.

Stylized chunks are encoded with settings fixed here, independent of the machine, so that every
chunk of a job has byte-identical SPS and PPS and the CPU side can join them by stream copy.
"""

from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path
from typing import IO

import numpy as np

from gpu.ffmpeg import QUIET_OPTIONS, FFmpegError, FFmpegProcess

NOMINAL_FRAME_RATE = 25
"""Output chunks carry a nominal constant rate: the CPU side retimes frames to the source's
timestamps when it reassembles, and a constant rate keeps the level, and so the SPS, equal."""

COLOUR_TAGS = ["-colorspace", "bt709", "-color_primaries", "bt709", "-color_trc", "bt709",
               "-color_range", "tv"]


def even_size(width: int, height: int) -> tuple[int, int]:
    """``(width, height)`` rounded up to even numbers, as 4:2:0 chroma subsampling needs."""
    return width + width % 2, height + height % 2


RAW_PIX_FMTS = ("yuv420p", "gbrp", "rgb24")
"""Pixel formats :func:`decode_argv` writes: the GPU job's two chunk formats, and packed RGB for
tests and tools that want to look at pictures."""


def frame_bytes(pix_fmt: str, width: int, height: int) -> int:
    """Bytes of one raw frame of ``pix_fmt`` (one of :data:`RAW_PIX_FMTS`).

    Raises:
        ValueError: An unknown format, or ``yuv420p`` at an odd size.
    """
    if pix_fmt == "yuv420p":
        if width % 2 or height % 2:
            raise ValueError(f"yuv420p frames need even dimensions, got {width}x{height}")
        return yuv420_frame_bytes(width, height)
    if pix_fmt in ("gbrp", "rgb24"):
        return 3 * width * height
    raise ValueError(f"unknown raw pixel format {pix_fmt!r}; expected one of {RAW_PIX_FMTS}")


def decode_argv(ffmpeg: str, source: Path, pix_fmt: str, threads: int = 0) -> list[str]:
    """Decode the first video stream of ``source`` to raw ``pix_fmt`` frames on stdout.

    For a chunk already in ``pix_fmt`` FFmpeg only copies the decoded planes out: no
    conversion, no packing. ``passthrough`` keeps every decoded frame exactly once: no frame is
    dropped or duplicated to fit a rate.

    Args:
        ffmpeg: The FFmpeg binary.
        source: The video.
        pix_fmt: One of :data:`RAW_PIX_FMTS`.
        threads: Decoder threads, 0 for FFmpeg's choice (one per core).
    """
    if pix_fmt not in RAW_PIX_FMTS:
        raise ValueError(f"unknown raw pixel format {pix_fmt!r}; expected one of {RAW_PIX_FMTS}")
    return [ffmpeg, *QUIET_OPTIONS, "-threads", str(threads),
            "-i", str(source), "-map", "0:v:0", "-fps_mode", "passthrough",
            "-f", "rawvideo", "-pix_fmt", pix_fmt, "pipe:1"]


def encode_argv(ffmpeg: str, target: Path, width: int, height: int, crf: int, preset: str,
                threads: int = 0) -> list[str]:
    """Encode planar YUV 4:2:0 frames of ``width`` x ``height`` from stdin to H.264 in Matroska.

    The frames arrive already converted with the BT.709 matrix at limited range (see
    :func:`gpu.stylize.rgb_to_yuv420`), as the colour tags say: FFmpeg spends no CPU on
    conversion, and the pipe carries half the bytes of RGB.

    Args:
        ffmpeg: The FFmpeg binary.
        target: The output file (any name: the container is given explicitly).
        width: Frame width; must be even (pad first, see :func:`even_size`).
        height: Frame height; must be even.
        crf: x264 constant rate factor.
        preset: x264 preset.
        threads: x264 threads, 0 for automatic (thread count does not change SPS or PPS).

    Returns:
        The argv list.

    Raises:
        ValueError: ``width`` or ``height`` is odd.
    """
    if width % 2 or height % 2:
        raise ValueError(f"H.264 4:2:0 needs even dimensions, got {width}x{height}: pad first")
    return [ffmpeg, *QUIET_OPTIONS,
            "-f", "rawvideo", "-pix_fmt", "yuv420p", "-video_size", f"{width}x{height}",
            "-framerate", str(NOMINAL_FRAME_RATE), *COLOUR_TAGS, "-i", "pipe:0",
            "-c:v", "libx264", "-preset", preset, "-crf", str(crf),
            "-profile:v", "high", "-bf", "0", "-threads", str(threads),
            # Every chunk starts with an IDR frame and is cut nowhere else by us; no scene-cut
            # I-frames keep the bitrate even; open GOPs would reference the previous chunk.
            "-x264-params", "open-gop=0:scenecut=0:keyint=600:min-keyint=600",
            *COLOUR_TAGS, "-an", "-f", "matroska", str(target)]


class FrameReader(FFmpegProcess):
    """Reads batches of raw ``pix_fmt`` frames from a video through an FFmpeg pipe.

    Use as a context manager; call :meth:`read_into` until it returns fewer frames than
    asked for.
    """

    def __init__(self, ffmpeg: str, source: Path, width: int, height: int, pix_fmt: str,
                 threads: int = 0) -> None:
        self.frame_bytes = frame_bytes(pix_fmt, width, height)
        super().__init__(decode_argv(ffmpeg, source, pix_fmt, threads), stdout=subprocess.PIPE)
        self.width, self.height, self.pix_fmt = width, height, pix_fmt
        self.frames_read = 0

    def __enter__(self) -> FrameReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def read_into(self, frames: np.ndarray) -> int:
        """Fill ``frames``, a writable C-contiguous uint8 array of ``N`` frames, from the stream.

        Each frame's part of ``frames`` (``frames[i]``) holds :attr:`frame_bytes` bytes: shape
        ``(N, frame_bytes)`` for the planar formats, ``(N, H, W, 3)`` suits ``rgb24``. Reading
        into buffers the caller reuses (pinned memory, under CUDA) avoids allocating and
        zero-filling a new batch each time.

        Returns:
            How many frames were read: ``N``, fewer at the end of the stream, 0 after it.

        Raises:
            FFmpegError: FFmpeg failed, or the stream ended inside a frame (which means the
                video's frame size is not the expected ``width`` x ``height``).
        """
        view = _frame_buffer_view(frames, self.frame_bytes, self.pix_fmt, self.width,
                                  self.height)
        assert self.proc.stdout is not None
        filled = _fill(self.proc.stdout, view)
        if filled % self.frame_bytes:
            raise self.error(f"decoded stream ended inside a frame: the video is not "
                              f"{self.width}x{self.height} as the manifest says")
        if filled < len(view) and self.proc.wait() != 0:
            raise self.error(f"ffmpeg decode failed (exit {self.proc.returncode})")
        self.frames_read += filled // self.frame_bytes
        return filled // self.frame_bytes


class RawFrameReader:
    """Reads batches of frames from a raw chunk: the frames' planes back to back, no header.

    The same interface as :class:`FrameReader` without a child process: the file is read
    straight into the caller's buffer, which is all the work there is.
    """

    def __init__(self, source: Path, width: int, height: int, pix_fmt: str) -> None:
        self.frame_bytes = frame_bytes(pix_fmt, width, height)
        self.source = source
        self.width, self.height, self.pix_fmt = width, height, pix_fmt
        self.frames_read = 0
        # Unbuffered: reads go from the kernel straight into the caller's (pinned) buffer.
        self._file = open(source, "rb", buffering=0)  # noqa: SIM115 - closed in __exit__

    def __enter__(self) -> RawFrameReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self._file.close()

    def read_into(self, frames: np.ndarray) -> int:
        """Fill ``frames`` from the file, as :meth:`FrameReader.read_into` does from FFmpeg.

        Returns:
            How many frames were read: ``N``, fewer at the end of the file, 0 after it.

        Raises:
            FFmpegError: The file ended inside a frame (it is truncated, or its frames are not
                ``width`` x ``height`` ``pix_fmt``).
        """
        view = _frame_buffer_view(frames, self.frame_bytes, self.pix_fmt, self.width,
                                  self.height)
        filled = _fill(self._file, view)
        if filled % self.frame_bytes:
            raise FFmpegError(
                f"raw chunk {self.source} ends inside a frame: frame "
                f"{self.frames_read + filled // self.frame_bytes} has "
                f"{filled % self.frame_bytes} of its {self.frame_bytes} bytes "
                f"({self.pix_fmt} {self.width}x{self.height})"
            )
        self.frames_read += filled // self.frame_bytes
        return filled // self.frame_bytes


def raw_chunk_frames(path: Path, pix_fmt: str, width: int, height: int) -> int:
    """Frames in the raw chunk ``path``, from its size.

    Raises:
        ValueError: The file is empty or does not hold a whole number of frames.
    """
    size, per_frame = path.stat().st_size, frame_bytes(pix_fmt, width, height)
    if not size or size % per_frame:
        raise ValueError(f"raw chunk {path.name} holds {size} bytes, not a whole positive "
                         f"number of {per_frame}-byte frames ({pix_fmt} {width}x{height})")
    return size // per_frame


def _frame_buffer_view(frames: np.ndarray, per_frame: int, pix_fmt: str, width: int,
                       height: int) -> memoryview:
    """The bytes of ``frames``, checked to be a C-contiguous uint8 array of whole frames."""
    row = frames[0].size if frames.ndim and len(frames) else 0
    if frames.dtype != np.uint8 or row != per_frame or not frames.flags.c_contiguous:
        raise ValueError(f"expected a C-contiguous uint8 buffer of {per_frame} bytes per frame "
                         f"({pix_fmt} {width}x{height}), got {frames.dtype} {frames.shape}")
    return memoryview(frames).cast("B")


def _fill(stream: IO[bytes], view: memoryview) -> int:
    """Read ``stream`` into ``view`` until it is full or the stream ends; the bytes read."""
    filled = 0
    while filled < len(view) and (got := stream.readinto(view[filled:])):
        filled += got
    return filled


def yuv420_frame_bytes(width: int, height: int) -> int:
    """Bytes of one planar 4:2:0 frame: a full-size Y plane, then quarter-size U and V planes."""
    return width * height + 2 * (width // 2) * (height // 2)


class FrameWriter(FFmpegProcess):
    """Writes ``(N, yuv420_frame_bytes)`` uint8 batches to an H.264 file via FFmpeg.

    Use as a context manager; :meth:`close` finishes the file, leaving without it kills FFmpeg.
    """

    def __init__(self, ffmpeg: str, target: Path, width: int, height: int, crf: int,
                 preset: str, threads: int = 0) -> None:
        super().__init__(encode_argv(ffmpeg, target, width, height, crf, preset, threads),
                         stdin=subprocess.PIPE)
        self.frames_written = 0
        self._shape = (yuv420_frame_bytes(width, height),)

    def __enter__(self) -> FrameWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def write(self, frames: np.ndarray) -> None:
        if frames.shape[1:] != self._shape or frames.dtype != np.uint8:
            raise ValueError(f"expected uint8 frames shaped (N, {self._shape[0]}), "
                             f"got {frames.dtype} {frames.shape}")
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(np.ascontiguousarray(frames).data)
        except BrokenPipeError:
            raise self.error("ffmpeg encode stopped reading its input") from None
        self.frames_written += len(frames)

    def close(self) -> None:
        """Flush the encoder and wait for it.

        Raises:
            FFmpegError: The encoder failed.
        """
        assert self.proc.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            self.proc.stdin.close()
        if self.proc.wait() != 0:
            raise self.error(f"ffmpeg encode failed (exit {self.proc.returncode})")
