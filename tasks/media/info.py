"""What probing an upload learns: its container, its video stream with every frame's timing,
and its audio streams. Plain data (standard library only); :mod:`tasks.media.probing` fills it.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from tasks.media.chunking import ChunkFormat, SourceVideo, choose_chunk_format


@dataclass(frozen=True)
class AudioStreamInfo:
    """One audio stream of the source.

    Attributes:
        index: Absolute stream index in the container.
        codec: FFmpeg codec name (``aac``, ``opus``, ...).
        channels: Channel count.
        sample_rate: Samples per second.
        start_time: First timestamp, seconds (container clock).
        duration: Length in seconds, when known.
    """

    index: int
    codec: str
    channels: int
    sample_rate: int
    start_time: float
    duration: float | None


@dataclass(frozen=True)
class VideoStreamInfo:
    """The source's video stream and the exact timing of every frame.

    Attributes:
        index: Absolute stream index in the container.
        codec: FFmpeg codec name.
        coded_width: Width of the decoded picture before rotation.
        coded_height: Height of the decoded picture before rotation.
        rotation: Display-matrix rotation in degrees, 0, 90, 180 or 270.
        display_width: Width as shown, after rotation.
        display_height: Height as shown, after rotation.
        sample_aspect_ratio: Pixel aspect ratio in display orientation (1 for square pixels).
        pixel_format: FFmpeg's name of the decoded pixel format (``yuv420p``, ``gbrp``, ...).
        pixel_family: ``yuv``, ``rgb`` or ``other`` (grey, palette, Bayer, XYZ ...).
        tagged_matrix: The YCbCr matrix the stream tags, by FFmpeg's name (``bt709``,
            ``smpte170m``, ...); None when it tags none.
        full_range: The stream is tagged full range ("pc"; ``yuvj*`` formats are).
        assumed_matrix: YCbCr matrix to decode with when a YUV source does not tag one: bt709
            from 720 lines up, else bt601, as players assume (FFmpeg alone would always take
            bt601); None when the source tags its own, or is not YUV.
        time_base: Time base of ``pts``.
        frame_count: Number of frames.
        pts: Sorted presentation timestamp of every frame, in ``time_base`` units.
        last_frame_duration: How long the last frame is shown, in ``time_base`` units.
        average_fps: Frames per second over the whole stream.
        vfr: Whether frame intervals vary by more than one tick.
    """

    index: int
    codec: str
    coded_width: int
    coded_height: int
    rotation: int
    display_width: int
    display_height: int
    sample_aspect_ratio: Fraction
    pixel_format: str
    pixel_family: str
    tagged_matrix: str | None
    full_range: bool
    assumed_matrix: str | None
    time_base: Fraction
    frame_count: int
    pts: tuple[int, ...]
    last_frame_duration: int
    average_fps: float
    vfr: bool

    def seconds(self, ticks: int) -> float:
        """``ticks`` of this stream's time base, in seconds."""
        return float(ticks * self.time_base)

    @property
    def chunk_format(self) -> ChunkFormat:
        """How the split stores this stream's pixels for the GPU job."""
        return choose_chunk_format(self.pixel_family, self.display_width, self.display_height,
                                   self.tagged_matrix, self.full_range)


@dataclass(frozen=True)
class MediaProbe:
    """What :func:`probe` learnt about a validated input.

    Attributes:
        path: The probed file.
        format_name: FFmpeg's name of the container (``mov,mp4,m4a,3gp,3g2,mj2``, ...).
        demuxer: The allowlisted demuxer name passed to FFmpeg as ``-f``.
        size_bytes: File size.
        duration: Container duration in seconds.
        start_offset_us: Container start time in microseconds; FFmpeg subtracts it from every
            stream when it writes a new file, so restamped video must subtract it too.
        video: The (first) video stream.
        audio: Every audio stream, in container order.
    """

    path: Path
    format_name: str
    demuxer: str
    size_bytes: int
    duration: float
    start_offset_us: int
    video: VideoStreamInfo
    audio: tuple[AudioStreamInfo, ...]

    @property
    def start_offset_ticks(self) -> int:
        """The container start offset in the video stream's time base (FFmpeg rounding)."""
        return round(Fraction(self.start_offset_us, 1_000_000) / self.video.time_base)


    @property
    def source_video(self) -> SourceVideo:
        """What the chunk decisions and the split need of the video stream."""
        video = self.video
        return SourceVideo(demuxer=self.demuxer, stream_index=video.index,
                           frame_count=video.frame_count, display_width=video.display_width,
                           display_height=video.display_height, fps=video.average_fps,
                           pixel_family=video.pixel_family, tagged_matrix=video.tagged_matrix,
                           full_range=video.full_range)
