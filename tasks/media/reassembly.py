"""Join the stylized H.264 chunks into the final MP4 at the source's exact timing.

The chunks' packets are concatenated without re-encoding and restamped with the source's own
frame timestamps (PyAV), even-padding is cropped back off through the MP4 clean aperture
(:mod:`tasks.media.mp4boxes`), and every audio stream is muxed back (FFmpeg).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
import ffmpeg

from gpu.ffmpeg import LIBRARY_PROTOCOLS, run_ffmpeg
from gpu.jobdir import CHUNKS_DIR
from tasks.media.commands import compile_argv, open_input
from tasks.media.info import MediaProbe, VideoStreamInfo
from tasks.media.mp4boxes import add_clean_aperture

# Audio codecs that play from an MP4 everywhere; anything else is transcoded to AAC.
MP4_AUDIO_CODECS = frozenset({"aac", "mp3", "ac3", "eac3", "alac"})
AAC_BITRATE = "192k"


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
    streams = [open_input(video, "mov")["v:0"]]
    codecs = {"c:v": "copy"}
    for n, (path, copy) in enumerate(audio):
        streams.append(open_input(path, "matroska")["a:0"])
        codecs |= {f"c:a:{n}": "copy"} if copy else {f"c:a:{n}": "aac", f"b:a:{n}": AAC_BITRATE}
    if sample_aspect_ratio != 1:
        sar = f"{sample_aspect_ratio.numerator}/{sample_aspect_ratio.denominator}"
        codecs["bsf:v"] = f"h264_metadata=sample_aspect_ratio={sar}"
    graph = ffmpeg.output(*streams, str(out), format="mp4", map_metadata=-1,
                          movie_timescale=movie_timescale, movflags="+faststart", **codecs)
    return compile_argv(graph, "-copyts")


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
            with av.open(str(path), options={"protocol_whitelist": LIBRARY_PROTOCOLS}) as chunk:
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


def _audio_is_mp4_ready(path: Path) -> bool:
    with av.open(str(path), options={"protocol_whitelist": LIBRARY_PROTOCOLS}) as container:
        return container.streams.audio[0].codec_context.name in MP4_AUDIO_CODECS


def reassemble(
    probe: MediaProbe, stylized_dir: Path, audio_files: Sequence[Path], out_path: Path
) -> Path:
    """Join the stylized chunks into the final MP4 at the source's exact timing.

    The chunks' H.264 packets are concatenated without re-encoding and packet ``i`` gets the
    source's ``i``-th frame timestamp (minus the container start offset), so constant and
    variable frame rates come out exactly as they went in. Even-padding added by the GPU job
    is cropped back off through the MP4 clean aperture (:mod:`tasks.media.mp4boxes`).
    Every audio file is muxed back, stream-copied when MP4 carries its codec, else as AAC.

    Args:
        probe: The source's probe.
        stylized_dir: The GPU job's output folder (``chunks/00000.mkv ...``).
        audio_files: Audio from :func:`tasks.media.audio.extract_audio`.
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

