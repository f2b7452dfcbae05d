"""What a decoded input frame looks like in a host buffer, and the reader of a chunk's frames."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from gpu.jobdir import InputFormat, JobManifest
from gpu.video_io import FrameReader, RawFrameReader, frame_bytes


@dataclass(frozen=True)
class FrameLayout:
    """What one decoded frame looks like in a host buffer: its size and raw pixel format."""

    width: int
    height: int
    input_format: InputFormat = field(default_factory=InputFormat)

    @classmethod
    def of(cls, manifest: JobManifest) -> FrameLayout:
        return cls(manifest.width, manifest.height, manifest.input_format)

    @property
    def pix_fmt(self) -> str:
        return self.input_format.pix_fmt

    @property
    def frame_bytes(self) -> int:
        """Bytes of one frame (one row of a decoded batch)."""
        return frame_bytes(self.pix_fmt, self.width, self.height)


def open_chunk_reader(ffmpeg: str, source: Path, layout: FrameLayout,
                      decoder_threads: int = 0) -> FrameReader | RawFrameReader:
    """A reader of ``source``'s raw frames for the chunk codec of ``layout.input_format``.

    Args:
        ffmpeg: The FFmpeg binary that decodes Ut Video chunks.
        source: The input chunk.
        layout: Its frames' size, pixel format and codec.
        decoder_threads: FFmpeg's decoder threads (0: its choice); raw chunks need none.
    """
    if layout.input_format.codec == "rawvideo":
        return RawFrameReader(source, layout.width, layout.height, layout.pix_fmt)
    return FrameReader(ffmpeg, source, layout.width, layout.height, layout.pix_fmt,
                       decoder_threads)


