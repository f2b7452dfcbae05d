"""Probe, split and reassemble videos with FFmpeg and PyAV (plain functions, no Prefect).

The CPU side of the pipeline:

* :func:`probe` validates an untrusted upload and records its exact frame timing.
* :func:`extract_audio` copies every audio stream out untouched.
* :func:`split_video` cuts the video into frame-exact lossless chunks for the GPU job: YUV 4:2:0
  when the GPU can convert the source's YUV itself, else planar RGB (see
  :mod:`tasks.split_command`).
* :func:`reassemble` joins the stylized H.264 chunks without re-encoding, restamps every
  frame with the source's own timestamp and muxes the audio back.

Untrusted input only ever reaches FFmpeg through an allowlist of plain media demuxers and the
``file`` protocol, so a playlist or concat list renamed to ``.mp4`` cannot make FFmpeg read
other local files or URLs. Every FFmpeg command line is built by a pure ``build_*`` function
(tested as data) and run by :func:`run_ffmpeg`.

Odd display sizes: the GPU job pads frames to even sizes because H.264 4:2:0 needs them, and
H.264 cannot crop the padding back off either (its SPS crops in steps of two pixels, so
``h264_metadata=crop_right=1`` is refused). The final MP4 therefore keeps the padded picture
and declares the true size in a clean-aperture ('clap') box, losslessly: see
:func:`add_clean_aperture`.
"""

from __future__ import annotations

import os
import struct
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path

import av
import imageio_ffmpeg

from gpu.jobdir import CHUNKS_DIR, ChunkSpec, EncodeSettings, JobManifest, write_manifest
from gpu.video_io import frame_bytes, raw_chunk_frames
from tasks.settings import LimitSettings
from tasks.split_command import (
    ALLOWED_DEMUXERS,
    FORMAT_WHITELIST,
    ChunkFormat,
    InvalidMediaError,
    assumed_matrix,
    base_argv,
    build_split_argv,
    choose_chunk_format,
    chunk_starts,
    input_argv,
)

# Protocols PyAV may open (the upload is a local file).
PYAV_PROTOCOLS = "file"
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
# Audio codecs that play from an MP4 everywhere; anything else is transcoded to AAC.
MP4_AUDIO_CODECS = frozenset({"aac", "mp3", "ac3", "eac3", "alac"})
AAC_BITRATE = "192k"
STDERR_TAIL_CHARS = 4000
# (offset, bytes) that mark a file as an MP4/MOV, Matroska/WebM, AVI, FLV or Ogg container: a
# file that starts like one but does not open is damaged rather than of an unknown kind.
CONTAINER_MAGIC = (
    (4, b"ftyp"), (4, b"moov"), (4, b"mdat"), (4, b"free"), (4, b"wide"),
    (0, b"\x1a\x45\xdf\xa3"), (0, b"RIFF"), (0, b"FLV"), (0, b"OggS"),
)  # fmt: skip


class FFmpegError(RuntimeError):
    """An FFmpeg command failed; carries its argv and the tail of its stderr."""

    def __init__(self, argv: Sequence[str], returncode: int, stderr: str) -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr = stderr[-STDERR_TAIL_CHARS:]
        super().__init__(
            f"ffmpeg exited with status {returncode}: {self.stderr.strip() or '(no stderr)'}"
        )


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
        """How :func:`split_video` stores this stream's pixels for the GPU job."""
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


# --------------------------------------------------------------------------- FFmpeg commands


def ffmpeg_exe() -> str:
    """Path of the FFmpeg binary shipped by imageio-ffmpeg."""
    return imageio_ffmpeg.get_ffmpeg_exe()


def _base_argv() -> list[str]:
    return base_argv(ffmpeg_exe())


def build_extract_audio_argv(
    src: Path, demuxer: str, stream_index: int, out: Path, codec: str = "copy"
) -> list[str]:
    """Copy audio stream ``stream_index`` (absolute index) of ``src`` into ``out`` (.mka).

    FFmpeg shifts every stream by the container's start time, the same shift
    :func:`reassemble` applies to the video, so the two stay in sync.

    Args:
        src: Source video.
        demuxer: Allowlisted demuxer of ``src``.
        stream_index: Absolute index of the audio stream.
        out: Output Matroska file.
        codec: ``copy``, or a lossless encoder (``flac``) for codecs Matroska cannot hold.
    """
    return [
        *_base_argv(),
        *input_argv(src, demuxer),
        "-map", f"0:{stream_index}",
        "-c", codec,
        "-map_chapters", "-1",
        "-f", "matroska",
        str(out),
    ]  # fmt: skip


def build_mux_argv(
    video: Path,
    audio: Sequence[tuple[Path, bool]],
    out: Path,
    *,
    movie_timescale: int,
    sample_aspect_ratio: Fraction = Fraction(1),
) -> list[str]:
    """Mux the restamped video with every audio file into a faststart MP4.

    ``-copyts`` keeps every input's timestamps as they are: all of them already share the
    source's clock, and FFmpeg's default per-input shift would break their offsets.

    Args:
        video: Video-only MP4 written by :func:`reassemble`.
        audio: ``(path, copy)`` per audio file; ``copy`` False transcodes it to AAC.
        out: Output MP4.
        movie_timescale: Ticks per second of the MP4's edit lists. A video that starts after
            the audio starts with an empty edit in this timescale; FFmpeg's default of 1000
            would round that start to a millisecond, so pass the video's timescale.
        sample_aspect_ratio: The source's pixel aspect ratio; when not square it is written
            into the H.264 VUI by ``h264_metadata`` (no re-encode), so anamorphic sources
            keep their shape.
    """
    argv = [*_base_argv(), "-copyts", *input_argv(video, "mov")]
    for path, _copy in audio:
        argv += input_argv(path, "matroska")
    argv += ["-map", "0:v:0"]
    for n in range(len(audio)):
        argv += ["-map", f"{n + 1}:a:0"]
    argv += ["-c:v", "copy"]
    if sample_aspect_ratio != 1:
        sar = f"{sample_aspect_ratio.numerator}/{sample_aspect_ratio.denominator}"
        argv += ["-bsf:v", f"h264_metadata=sample_aspect_ratio={sar}"]
    for n, (_path, copy) in enumerate(audio):
        argv += [f"-c:a:{n}", "copy"] if copy else [f"-c:a:{n}", "aac", f"-b:a:{n}", AAC_BITRATE]
    return [*argv, "-map_metadata", "-1", "-movie_timescale", str(movie_timescale),
            "-movflags", "+faststart", "-f", "mp4", str(out)]


def build_frame_png_argv(
    src: Path, demuxer: str, frame_index: int, max_width: int, out: Path
) -> list[str]:
    """Decode frame number ``frame_index`` of ``src`` (upright) into a PNG at most ``max_width``."""
    scale = f"scale=w='min(iw,{max_width})':h=-2:flags=bicubic"
    return [
        *_base_argv(),
        *input_argv(src, demuxer),
        "-map", "0:v:0",
        "-vf", f"select='eq(n,{frame_index})',{scale}",
        "-fps_mode", "passthrough",
        "-frames:v", "1",
        "-update", "1",
        "-f", "image2",
        "-c:v", "png",
        str(out),
    ]  # fmt: skip


def run_ffmpeg(argv: Sequence[str]) -> None:
    """Run one FFmpeg command.

    Raises:
        FFmpegError: FFmpeg failed; the error carries ``argv`` and the tail of stderr.
    """
    result = subprocess.run(
        list(argv), stdin=subprocess.DEVNULL, capture_output=True, text=True, errors="replace"
    )
    if result.returncode != 0:
        raise FFmpegError(argv, result.returncode, result.stderr)


# --------------------------------------------------------------------------- probing


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
    options = {"protocol_whitelist": PYAV_PROTOCOLS, "format_whitelist": FORMAT_WHITELIST}
    try:
        container = av.open(str(path), options=options, metadata_errors="ignore")
    except av.error.FFmpegError as exc:
        raise InvalidMediaError(f"{path.name} {_describe_unopenable(path, exc)}") from exc
    # The whitelist is enforced inside FFmpeg; check the outcome as well, so a build that
    # ignored the option could not slip a playlist demuxer through.
    names = container.format.name.split(",")
    if names[0] not in ALLOWED_DEMUXERS:
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


def _demuxer_of(container: av.container.InputContainer) -> str:
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
        demuxer=_demuxer_of(container),
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


# --------------------------------------------------------------------------- audio


def extract_audio(src: Path, probe: MediaProbe, out_dir: Path) -> list[Path]:
    """Stream-copy every audio stream of ``src`` into its own Matroska file.

    A codec Matroska cannot carry (old QuickTime ADPCM, for one) is decoded to FLAC
    instead: still lossless, and :func:`reassemble` turns it into AAC either way.

    Returns:
        ``out_dir/audio-00.mka ...`` in the order of ``probe.audio``.

    Raises:
        FFmpegError: A stream could be neither copied nor decoded.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    outputs = []
    for n, stream in enumerate(probe.audio):
        out = out_dir / f"audio-{n:02d}.mka"
        tmp = out_dir / f".audio-{n:02d}.tmp.mka"
        try:
            try:
                run_ffmpeg(build_extract_audio_argv(src, probe.demuxer, stream.index, tmp))
            except FFmpegError:
                run_ffmpeg(
                    build_extract_audio_argv(src, probe.demuxer, stream.index, tmp, "flac")
                )
            os.replace(tmp, out)
        finally:
            tmp.unlink(missing_ok=True)
        outputs.append(out)
    return outputs


# --------------------------------------------------------------------------- split


def count_video_packets(path: Path) -> tuple[int, int, int, str]:
    """Packets of the first video stream of a file we wrote, its width, height and pixel format."""
    with av.open(str(path), options={"protocol_whitelist": PYAV_PROTOCOLS}) as container:
        stream = container.streams.video[0]
        packets = sum(1 for p in container.demux(stream) if p.size)
        ctx = stream.codec_context
        return packets, ctx.width, ctx.height, ctx.format.name if ctx.format else ""


RAW_CHUNKS_MAX_SHARE_OF_FREE_DISK = 0.5
"""``chunk_codec=auto`` writes raw chunks only when they fill at most this share of the free disk:
the rest is left for the stylized chunks, the result and whatever else shares the disk."""


class InsufficientDiskError(RuntimeError):
    """The chunks would not fit on the disk of the GPU job's input folder."""


def raw_chunks_bytes(video: VideoStreamInfo) -> int:
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


def split_video(
    src: Path, probe: MediaProbe, input_dir: Path, chunk_frames: int, encode: EncodeSettings,
    codec: str = "utvideo",
) -> JobManifest:
    """Cut ``src`` into frame-exact lossless chunks and write the GPU job's manifest.

    Chunks are Ut Video (lossless, intra-only) or raw frames, in display orientation, written
    to a temporary folder and moved to ``input_dir/chunks`` only once their frame counts add up
    to the probe's. Their pixel format is :attr:`VideoStreamInfo.chunk_format`: ``yuv420p`` at
    limited range in the source's own YCbCr matrix when the GPU job knows that matrix and the
    size is even, else ``gbrp`` (planar RGB converted here). The manifest's ``input_format``
    records which, the matrix and the codec, so the GPU job converts to RGB itself.

    Ut Video chunks are probed for their frames, size and pixel format. Raw ones have no header
    to probe: each must hold a whole number of frames of the expected size and format.

    Args:
        src: The probed source.
        probe: Its probe.
        input_dir: The GPU job's input folder.
        chunk_frames: The most frames in one chunk; the frames are shared evenly
            (:func:`chunk_starts`).
        encode: How the GPU job encodes the stylized chunks.
        codec: ``utvideo`` or ``rawvideo`` (see :data:`gpu.jobdir.CHUNK_CODECS`).

    Returns:
        The manifest, also written to ``input_dir/job.json``.

    Raises:
        FFmpegError: FFmpeg failed.
        RuntimeError: The chunks do not hold exactly the source's frames.
    """
    video = probe.video
    chunk_format = replace(video.chunk_format, codec=codec)
    suffix = chunk_format.suffix  # refuses an unknown codec before any work
    input_dir.mkdir(parents=True, exist_ok=True)
    final_dir = input_dir / CHUNKS_DIR
    work_dir = Path(tempfile.mkdtemp(prefix=".chunks-", dir=input_dir))
    try:
        run_ffmpeg(build_split_argv(ffmpeg_exe(), src, probe.demuxer, video.index,
                                    chunk_starts(video.frame_count, chunk_frames),
                                    work_dir / f"%05d{suffix}", chunk_format))
        chunks = []
        first_frame = 0
        for index, path in enumerate(sorted(work_dir.glob(f"*{suffix}"))):
            if path.name != f"{index:05d}{suffix}":
                raise RuntimeError(f"unexpected chunk file {path.name}")
            frames = _chunk_frames(path, video, chunk_format)
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


def _chunk_frames(path: Path, video: VideoStreamInfo, chunk_format: ChunkFormat) -> int:
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
    frames, width, height, pix_fmt = count_video_packets(path)
    if (width, height) != size:
        raise RuntimeError(f"chunk {path.name} is {width}x{height}, expected "
                           f"{size[0]}x{size[1]}")
    if pix_fmt != chunk_format.pix_fmt:
        raise RuntimeError(f"chunk {path.name} is {pix_fmt}, expected {chunk_format.pix_fmt}")
    return frames


def _remove_tree(path: Path) -> None:
    for child in path.iterdir():
        child.unlink()
    path.rmdir()


# --------------------------------------------------------------------------- reassemble


def _stylized_chunks(stylized_dir: Path) -> list[Path]:
    paths = sorted((stylized_dir / CHUNKS_DIR).glob("[0-9][0-9][0-9][0-9][0-9].mkv"))
    if not paths:
        raise RuntimeError(f"no stylized chunks in {stylized_dir / CHUNKS_DIR}")
    for index, path in enumerate(paths):
        if path.name != f"{index:05d}.mkv":
            raise RuntimeError(f"stylized chunk {index:05d}.mkv is missing")
    return paths


def _write_restamped_video(chunks: list[Path], video: VideoStreamInfo, start_ticks: int,
                           out: Path) -> tuple[int, int]:
    """Concatenate the chunks' H.264 packets, packet ``i`` stamped with source frame ``i``.

    Returns:
        The coded width and height of the chunks.
    """
    pts = video.pts
    written = 0
    extradata = None
    size = (0, 0)
    timescale = {"movie_timescale": str(video.time_base.denominator)}
    with av.open(str(out), "w", format="mp4", options=timescale) as output:
        ostream = None
        for path in chunks:
            with av.open(str(path), options={"protocol_whitelist": PYAV_PROTOCOLS}) as chunk:
                stream = chunk.streams.video[0]
                ctx = stream.codec_context
                if ctx.name != "h264":
                    raise RuntimeError(f"stylized chunk {path.name} is {ctx.name}, not h264")
                if ostream is None:
                    extradata, size = ctx.extradata, (ctx.width, ctx.height)
                    ostream = output.add_stream_from_template(stream)
                    ostream.time_base = video.time_base
                elif ctx.extradata != extradata or (ctx.width, ctx.height) != size:
                    raise RuntimeError(
                        f"stylized chunk {path.name} was encoded with different settings "
                        "(SPS/PPS differ), so the chunks cannot be joined without re-encoding"
                    )
                for packet in chunk.demux(stream):
                    if not packet.size:
                        continue
                    if written >= len(pts):
                        raise RuntimeError(
                            f"stylized chunks hold more than the source's {len(pts)} frames"
                        )
                    following = (pts[written + 1] if written + 1 < len(pts)
                                 else pts[written] + video.last_frame_duration)
                    packet.stream = ostream
                    packet.time_base = video.time_base
                    packet.pts = packet.dts = pts[written] - start_ticks
                    packet.duration = following - pts[written]
                    output.mux(packet)
                    written += 1
    if written != len(pts):
        raise RuntimeError(f"stylized chunks hold {written} frames, the source has {len(pts)}")
    return size


def _children(data: bytes, start: int, end: int) -> list[tuple[bytes, int, int]]:
    """``(type, offset, size)`` of the ISO-BMFF boxes in ``data[start:end]``."""
    boxes = []
    while start + 8 <= end:
        size, kind = struct.unpack(">I4s", data[start:start + 8])
        if size < 8 or start + size > end:
            raise RuntimeError("malformed MP4 box")
        boxes.append((kind, start, size))
        start += size
    return boxes


def add_clean_aperture(mp4: Path, crop_right: int, crop_bottom: int) -> None:
    """Add a 'clap' box to the video sample entry of an MP4 whose 'moov' comes last.

    H.264 4:2:0 can only crop an even number of pixels in its SPS (``h264_metadata``
    refuses ``crop_right=1``), so an odd display size cannot live in the bitstream. The MP4
    clean-aperture box can express it without touching a pixel; FFmpeg reads it as frame
    cropping side data and carries it through later remuxes. Only the sizes of the enclosing
    boxes change, and with 'moov' at the end of the file no sample offset moves.
    """
    found = _read_moov(mp4)
    if found is None:
        raise RuntimeError(f"{mp4.name} has no moov box")
    moov_off, moov = found
    if moov_off + len(moov) != mp4.stat().st_size:
        raise RuntimeError("clean aperture needs an MP4 whose moov box comes last")
    data = bytearray(moov)
    path = [(0, len(data))]
    for box in (b"trak", b"mdia", b"minf", b"stbl", b"stsd"):
        path.append(_child(data, path[-1], box))
    entry_off, entry_size = _children(data, *_span(path[-1], 16))[0][1:]
    width, height = struct.unpack(">HH", data[entry_off + 32:entry_off + 36])
    # Offsets of the aperture centre from the picture centre: -crop/2 for right/bottom crops.
    clap = struct.pack(">I4sIIIIiIiI", 40, b"clap", width - crop_right, 1, height - crop_bottom,
                       1, -crop_right, 2, -crop_bottom, 2)
    insert_at = entry_off + entry_size
    data[insert_at:insert_at] = clap
    for off, _size in [*path, (entry_off, entry_size)]:
        (old,) = struct.unpack(">I", data[off:off + 4])
        data[off:off + 4] = struct.pack(">I", old + len(clap))
    with mp4.open("r+b") as fh:
        fh.seek(moov_off)
        fh.write(data)


def _read_moov(mp4: Path) -> tuple[int, bytes] | None:
    """Offset and bytes of an MP4's 'moov' box, found by seeking over the top-level boxes."""
    with mp4.open("rb") as fh:
        end = fh.seek(0, os.SEEK_END)
        offset = 0
        while offset + 8 <= end:
            fh.seek(offset)
            size, kind = struct.unpack(">I4s", fh.read(8))
            header = 8
            if size == 1:  # a 64-bit size follows
                (size,) = struct.unpack(">Q", fh.read(8))
                header = 16
            elif size == 0:  # the box runs to the end of the file
                size = end - offset
            if size < header:
                return None
            if kind == b"moov":
                fh.seek(offset)
                return offset, fh.read(size)
            offset += size
    return None


def _child(data: bytes, parent: tuple[int, int], kind: bytes, header: int = 8) -> tuple[int, int]:
    """``(offset, size)`` of the first ``kind`` box inside the box at ``parent``."""
    offset, size = parent
    for child, child_off, child_size in _children(data, offset + header, offset + size):
        if child == kind:
            return child_off, child_size
    raise KeyError(kind)


def clean_aperture(mp4: Path) -> tuple[int, int] | None:
    """Width and height of the video track's 'clap' (clean aperture) box, if it has one."""
    found = _read_moov(mp4)
    if found is None:
        return None
    moov = found[1]
    for kind, off, size in _children(moov, 8, len(moov)):
        if kind != b"trak":
            continue
        try:
            mdia = _child(moov, (off, size), b"mdia")
            hdlr_off, _ = _child(moov, mdia, b"hdlr")
            if moov[hdlr_off + 16:hdlr_off + 20] != b"vide":
                continue
            stbl = _child(moov, _child(moov, mdia, b"minf"), b"stbl")
            entry_off, entry_size = _children(moov, *_span(_child(moov, stbl, b"stsd"), 16))[0][1:]
            # Visual sample entries hold 78 bytes of fields before their child boxes.
            clap_off, _ = _child(moov, (entry_off, entry_size), b"clap", header=86)
        except (KeyError, IndexError):
            continue
        w_num, w_den, h_num, h_den = struct.unpack(">IIII", moov[clap_off + 8:clap_off + 24])
        return w_num // w_den, h_num // h_den
    return None


def _span(box: tuple[int, int], header: int) -> tuple[int, int]:
    """Start and end of the children of the box at ``box`` after a ``header``-byte header."""
    return box[0] + header, box[0] + box[1]


def _audio_is_mp4_ready(path: Path) -> bool:
    with av.open(str(path), options={"protocol_whitelist": PYAV_PROTOCOLS}) as container:
        return container.streams.audio[0].codec_context.name in MP4_AUDIO_CODECS


def reassemble(
    probe: MediaProbe, stylized_dir: Path, audio_files: Sequence[Path], out_path: Path
) -> Path:
    """Join the stylized chunks into the final MP4 at the source's exact timing.

    The chunks' H.264 packets are concatenated without re-encoding and packet ``i`` gets the
    source's ``i``-th frame timestamp (minus the container start offset), so constant and
    variable frame rates come out exactly as they went in. Even-padding added by the GPU job
    is cropped back off through the MP4 clean aperture (see :func:`add_clean_aperture`).
    Every audio file is muxed back, stream-copied when MP4 carries its codec, else as AAC.

    Args:
        probe: The source's probe.
        stylized_dir: The GPU job's output folder (``chunks/00000.mkv ...``).
        audio_files: Audio from :func:`extract_audio`.
        out_path: Final MP4; written under a temporary name and renamed when complete.

    Returns:
        ``out_path``.

    Raises:
        RuntimeError: The chunks are missing, mismatched or hold the wrong number of frames.
        FFmpegError: Muxing failed.
    """
    chunks = _stylized_chunks(stylized_dir)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out_path.name}.", dir=out_path.parent) as tmp:
        video_mp4 = Path(tmp) / "video.mp4"
        width, height = _write_restamped_video(chunks, probe.video, probe.start_offset_ticks,
                                               video_mp4)
        crop_right = width - probe.video.display_width
        crop_bottom = height - probe.video.display_height
        if crop_right not in (0, 1) or crop_bottom not in (0, 1):
            raise RuntimeError(
                f"stylized chunks are {width}x{height}; expected "
                f"{probe.video.display_width}x{probe.video.display_height} padded to even"
            )
        if crop_right or crop_bottom:
            add_clean_aperture(video_mp4, crop_right, crop_bottom)
        audio = [(path, _audio_is_mp4_ready(path)) for path in audio_files]
        muxed = Path(tmp) / "out.mp4"
        run_ffmpeg(build_mux_argv(video_mp4, audio, muxed,
                                  movie_timescale=probe.video.time_base.denominator,
                                  sample_aspect_ratio=probe.video.sample_aspect_ratio))
        os.replace(muxed, out_path)
    return out_path


# --------------------------------------------------------------------------- thumbnails


def extract_frame_png(path: Path, frame_index: int, out_png: Path, max_width: int = 480) -> Path:
    """Save frame number ``frame_index`` of a video, upright, as a PNG at most ``max_width`` wide.

    Used for the before/after thumbnails of the source and the result.

    Raises:
        InvalidMediaError: ``path`` is not an accepted video.
        FFmpegError: FFmpeg failed, or the video has fewer frames than ``frame_index + 1``.
    """
    with open_media(path) as container:
        demuxer = _demuxer_of(container)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_png.with_name(f".{out_png.stem}.tmp.png")
    argv = build_frame_png_argv(path, demuxer, frame_index, max_width, tmp)
    run_ffmpeg(argv)
    if not tmp.exists():
        raise FFmpegError(argv, 0, f"frame {frame_index} does not exist in {path.name}")
    os.replace(tmp, out_png)
    return out_png
