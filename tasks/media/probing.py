"""Probe an untrusted upload with PyAV: validate it and record its exact frame timing.

PyAV opens the file only with the allowlisted demuxers and the ``file`` protocol
(:mod:`gpu.ffmpeg`), and the outcome is checked again, so a playlist or concat list renamed to
``.mp4`` is refused before FFmpeg reads anything it names. Every demuxed packet is looked at
once: frame timestamps, audio extents and the first decodable frame (size, rotation, pixels).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av

from gpu.ffmpeg import ALLOWED_DEMUXERS, FORMAT_WHITELIST, LIBRARY_PROTOCOLS, InvalidMediaError
from tasks.media.chunking import assumed_matrix
from tasks.media.info import AudioStreamInfo, MediaProbe, VideoStreamInfo
from tasks.settings import LimitSettings

# AVCOL_SPC_UNSPECIFIED: the stream does not say which YCbCr matrix it uses.
UNSPECIFIED_COLORSPACE = 2
# FFmpeg's names (av_color_space_name) of the AVColorSpace values a frame may carry.
COLORSPACE_NAMES = {
    0: "gbr", 1: "bt709", 4: "fcc", 5: "bt470bg", 6: "smpte170m", 7: "smpte240m", 8: "ycgco",
    9: "bt2020nc", 10: "bt2020c", 11: "smpte2085", 12: "chroma-derived-nc",
    13: "chroma-derived-c", 14: "ictcp", 15: "ipt-c2", 16: "ycgco-re", 17: "ycgco-ro",
}
# AVCOL_RANGE_JPEG: full-range ("pc") samples.
FULL_RANGE = 2
# (offset, bytes) that mark a file as an MP4/MOV, Matroska/WebM, AVI, FLV or Ogg container: a
# file that starts like one but does not open is damaged rather than of an unknown kind.
CONTAINER_MAGIC = (
    (4, b"ftyp"), (4, b"moov"), (4, b"mdat"), (4, b"free"), (4, b"wide"),
    (0, b"\x1a\x45\xdf\xa3"), (0, b"RIFF"), (0, b"FLV"), (0, b"OggS"),
)  # fmt: skip


def _describe_unopenable(path: Path, error: Exception) -> str:
    """Why FFmpeg refused to open ``path``, as specific as the first bytes allow."""
    with path.open("rb") as fh:
        head = fh.read(4096)
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if text.startswith(b"#EXTM3U") or b"#EXT-X-" in head:
        return "is an HLS playlist, not a video file; playlists are refused"
    if text.startswith(b"ffconcat") or text.startswith(b"file "):
        return "is an FFmpeg concat list, not a video file; concat lists are refused"
    if b"\x00" not in head:
        try:
            head.decode("utf-8")
        except UnicodeDecodeError:
            pass
        else:
            return "is a text file, not a video"
    if isinstance(error, av.error.InvalidDataError):
        if any(head.startswith(magic, offset) for offset, magic in CONTAINER_MAGIC):
            return f"is truncated or corrupt ({error.strerror})"
        return f"is not a recognised video file ({error.strerror})"
    return (
        f"is not in an accepted video container (accepted demuxers: {FORMAT_WHITELIST}; "
        f"{error})"
    )


def open_media(path: Path) -> av.container.InputContainer:
    """Open an untrusted file with PyAV: allowlisted demuxers and local files only.

    Raises:
        InvalidMediaError: FFmpeg cannot open it, or it is not a plain media container.
    """
    options = {"protocol_whitelist": LIBRARY_PROTOCOLS, "format_whitelist": FORMAT_WHITELIST}
    try:
        container = av.open(str(path), options=options, metadata_errors="ignore")
    except av.error.FFmpegError as exc:
        raise InvalidMediaError(f"{path.name} {_describe_unopenable(path, exc)}") from exc
    # The whitelist is enforced inside FFmpeg; check the outcome as well, so a build that
    # ignored the option could not slip a playlist demuxer through.
    if demuxer_of(container) not in ALLOWED_DEMUXERS:
        container.close()
        raise InvalidMediaError(
            f"{path.name} opened as {container.format.name!r}, which is not an accepted "
            "video container"
        )
    return container


def main_video_stream(container: av.container.InputContainer) -> av.VideoStream | None:
    """The first real video stream: cover art and other still pictures do not count."""
    stills = av.stream.Disposition.attached_pic | av.stream.Disposition.still_image
    for stream in container.streams.video:
        if not stream.disposition & stills:
            return stream
    return None


def demuxer_of(container: av.container.InputContainer) -> str:
    """The demuxer FFmpeg opened ``container`` with (the first of its names for the format)."""
    return container.format.name.split(",")[0]


def _rotation_of(frame: av.VideoFrame) -> int:
    rotation = round(frame.rotation) % 360
    if rotation % 90:
        raise InvalidMediaError(f"unsupported display rotation of {rotation} degrees")
    return rotation


def _pixel_family(frame: av.VideoFrame) -> str:
    """``rgb``, ``yuv`` (three or more components that are not RGB), or ``other``."""
    fmt = frame.format
    if fmt.is_rgb:
        return "rgb"
    if fmt.has_palette or fmt.is_bayer or len(fmt.components) < 3 or fmt.name.startswith("xyz"):
        return "other"
    return "yuv"


def _tagged_matrix(frame: av.VideoFrame) -> str | None:
    if frame.colorspace == UNSPECIFIED_COLORSPACE:
        return None
    return COLORSPACE_NAMES.get(frame.colorspace, f"colorspace {frame.colorspace}")


def _assumed_matrix(frame: av.VideoFrame) -> str | None:
    if frame.colorspace != UNSPECIFIED_COLORSPACE or _pixel_family(frame) != "yuv":
        return None
    return assumed_matrix(frame.width, frame.height)


@dataclass
class _Scan:
    """What one demuxing pass over the file collected."""

    pts: list[int]
    packets: int
    last_duration: int
    first_frame: av.VideoFrame | None
    audio_first: dict[int, int]
    audio_end: dict[int, int]


def _scan(container: av.container.InputContainer, video: av.VideoStream, name: str) -> _Scan:
    """Demux every packet once: frame timestamps, audio extents and the first decoded frame."""
    audio = list(container.streams.audio)
    scan = _Scan(pts=[], packets=0, last_duration=0, first_frame=None, audio_first={},
                 audio_end={})
    last_pts = None
    try:
        for packet in container.demux(video, *audio):
            if packet.size == 0:
                continue  # PyAV's end-of-stream marker
            ts = packet.pts if packet.pts is not None else packet.dts
            if packet.stream.index != video.index:
                if ts is not None:
                    index = packet.stream.index
                    scan.audio_first.setdefault(index, ts)
                    scan.audio_end[index] = max(scan.audio_end.get(index, ts),
                                                ts + (packet.duration or 0))
                continue
            scan.packets += 1
            if packet.is_discard:
                continue  # outside the edit list: FFmpeg drops the decoded frame too
            if ts is None:
                raise InvalidMediaError(f"{name} has video frames without timestamps")
            scan.pts.append(ts)
            if last_pts is None or ts > last_pts:
                last_pts, scan.last_duration = ts, packet.duration or 0
            if scan.first_frame is None:
                scan.first_frame = _decode_first(video, packet)
        if scan.first_frame is None:
            scan.first_frame = _decode_first(video, None)
    except av.error.FFmpegError as exc:
        raise InvalidMediaError(f"{name} is corrupt: {exc}") from exc
    return scan


def _decode_first(video: av.VideoStream, packet: av.Packet | None) -> av.VideoFrame | None:
    try:
        frames = video.decode(packet)
    except av.error.FFmpegError:
        return None  # a damaged packet; a later one may still decode
    return frames[0] if frames else None


def probe(path: Path, limits: LimitSettings) -> MediaProbe:
    """Validate an untrusted upload and describe it, including every frame's timestamp.

    Args:
        path: The uploaded file.
        limits: Size, pixel and duration limits.

    Returns:
        The probe; its ``video.pts`` drives frame-exact splitting and reassembly.

    Raises:
        InvalidMediaError: The file is empty, too large, not a plain video container (text,
            playlist, concat list, audio only), truncated or corrupt, has no decodable frame,
            or exceeds a limit. The message says which.
    """
    name = path.name
    size = path.stat().st_size
    if size == 0:
        raise InvalidMediaError(f"{name} is empty")
    if size > limits.max_bytes:
        raise InvalidMediaError(f"{name} is {size} bytes, over the limit of {limits.max_bytes}")
    with open_media(path) as container:
        video = main_video_stream(container)
        if video is None:
            kind = "an audio-only file" if container.streams.audio else "a file without video"
            raise InvalidMediaError(f"{name} is {kind}; a video stream is required")
        width, height = video.codec_context.width, video.codec_context.height
        if width * height > limits.max_pixels:
            raise InvalidMediaError(
                f"{name} has {width}x{height} frames, over the limit of {limits.max_pixels} pixels"
            )
        header_duration = (container.duration or 0) / 1_000_000
        if header_duration > limits.max_duration_s:
            raise InvalidMediaError(
                f"{name} lasts {header_duration:.1f} s, over the limit of "
                f"{limits.max_duration_s:.0f} s"
            )
        video.thread_type = "AUTO"
        scan = _scan(container, video, name)
        if video.frames and scan.packets < video.frames:
            raise InvalidMediaError(
                f"{name} is truncated: its index lists {video.frames} video frames but only "
                f"{scan.packets} could be read"
            )
        if scan.first_frame is None:
            raise InvalidMediaError(f"{name} has no decodable video frame")
        return _build_probe(path, container, video, scan, limits)


def _build_probe(
    path: Path,
    container: av.container.InputContainer,
    video: av.VideoStream,
    scan: _Scan,
    limits: LimitSettings,
) -> MediaProbe:
    name = path.name
    frame = scan.first_frame
    assert frame is not None
    if frame.width * frame.height > limits.max_pixels:  # headers can lie or say nothing
        raise InvalidMediaError(
            f"{name} has {frame.width}x{frame.height} frames, over the limit of "
            f"{limits.max_pixels} pixels"
        )
    time_base = Fraction(video.time_base)
    pts = sorted(scan.pts)
    if not pts:
        raise InvalidMediaError(f"{name} has no video frames to show")
    if len(set(pts)) != len(pts):
        raise InvalidMediaError(f"{name} has several video frames with the same timestamp")
    deltas = [b - a for a, b in zip(pts, pts[1:], strict=False)]
    if deltas:
        span = float((pts[-1] - pts[0]) * time_base)
        average_fps = len(deltas) / span
        vfr = max(deltas) - min(deltas) > 1
        typical = sorted(deltas)[len(deltas) // 2]
    else:
        average_fps = float(video.average_rate or video.guessed_rate or 0)
        vfr = False
        typical = round(1 / (average_fps * time_base)) if average_fps else 1
    last_duration = scan.last_duration if scan.last_duration > 0 else typical
    start_us = container.start_time or 0
    frames_span = float((pts[-1] + last_duration - pts[0]) * time_base)
    duration = (container.duration or 0) / 1_000_000 or frames_span
    longest = max(duration, frames_span)  # a header may understate the real length
    if longest > limits.max_duration_s:
        raise InvalidMediaError(
            f"{name} lasts {longest:.1f} s, over the limit of {limits.max_duration_s:.0f} s"
        )
    rotation = _rotation_of(frame)
    swapped = rotation in (90, 270)
    sar = Fraction(video.sample_aspect_ratio or 1) or Fraction(1)
    audio = tuple(
        AudioStreamInfo(
            index=stream.index,
            codec=stream.codec_context.name,
            channels=stream.codec_context.channels,
            sample_rate=stream.codec_context.sample_rate,
            start_time=float(scan.audio_first.get(stream.index, 0) * stream.time_base),
            duration=(
                float((scan.audio_end[stream.index] - scan.audio_first[stream.index])
                      * stream.time_base)
                if stream.index in scan.audio_end else None
            ),
        )
        for stream in container.streams.audio
    )
    return MediaProbe(
        path=path,
        format_name=container.format.name,
        demuxer=demuxer_of(container),
        size_bytes=path.stat().st_size,
        duration=duration,
        start_offset_us=start_us,
        video=VideoStreamInfo(
            index=video.index,
            codec=video.codec_context.name,
            coded_width=frame.width,
            coded_height=frame.height,
            rotation=rotation,
            display_width=frame.height if swapped else frame.width,
            display_height=frame.width if swapped else frame.height,
            sample_aspect_ratio=1 / sar if swapped else sar,
            pixel_format=frame.format.name,
            pixel_family=_pixel_family(frame),
            tagged_matrix=_tagged_matrix(frame),
            full_range=frame.color_range == FULL_RANGE or frame.format.name.startswith("yuvj"),
            assumed_matrix=_assumed_matrix(frame),
            time_base=time_base,
            frame_count=len(pts),
            pts=tuple(pts),
            last_frame_duration=last_duration,
            average_fps=average_fps,
            vfr=vfr,
        ),
        audio=audio,
    )

