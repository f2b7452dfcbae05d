"""Tiny test clips generated with FFmpeg's lavfi sources (shared by the test suite).

Every clip is built by the project's FFmpeg binary (:mod:`gpu.ffmpeg`) from synthetic sources,
so tests need no media files and no network. Clips are small (tens of kilobytes) and take
well under a second.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from gpu.ffmpeg import base_argv, find_ffmpeg, run_ffmpeg

# Sine frequencies of the generated audio streams, one per stream.
AUDIO_FREQUENCIES = (440, 880, 1320, 1760)
# The "counter" pattern's luma: COUNTER_BASE + COUNTER_STEP * frame number (mod COUNTER_SPAN).
COUNTER_BASE = 16
COUNTER_STEP = 4
COUNTER_SPAN = 216


def counter_value(luma: float) -> int:
    """Frame number encoded by a "counter" frame's mean luma (limited-range Y)."""
    return round((luma - COUNTER_BASE) / COUNTER_STEP)


def counter_value_rgb(grey: float) -> int:
    """Frame number encoded by a "counter" frame converted to full-range RGB grey."""
    return counter_value(COUNTER_BASE + grey * 219 / 255)


def ffmpeg(*args: str) -> None:
    """Run the FFmpeg binary quietly, overwriting its output; FFmpegError on failure."""
    run_ffmpeg([*base_argv(find_ffmpeg()), *args])


def make_clip(
    path: Path,
    *,
    width: int = 64,
    height: int = 48,
    seconds: float = 1.0,
    fps: int = 25,
    audio_streams: int = 0,
    vfr: bool = False,
    rotate: int = 0,
    audio_codec: str = "aac",
    pattern: str = "testsrc2",
    audio_offset: float = 0.0,
    sample_aspect_ratio: str | None = None,
) -> Path:
    """Write a test clip (H.264 test pattern plus sine-wave audio streams).

    Args:
        path: Output file; its extension picks the container (.mp4, .mkv, .mov ...).
        width: Frame width; odd sizes are encoded as 4:4:4, which H.264 allows at any size.
        height: Frame height.
        seconds: Duration.
        fps: Frame rate (the nominal rate for ``vfr``).
        audio_streams: Number of audio streams, each a sine at its own frequency.
        vfr: Make frame intervals irregular (alternately 1x and 2x the nominal interval).
        rotate: Display rotation in degrees written to the container (0, 90, 180, 270).
        audio_codec: Encoder of the audio streams.
        pattern: ``testsrc2`` (moving test card) or ``counter``: flat grey frames whose
            luma is ``16 + 4 * frame number`` (unique for 54 frames), so a test can tell
            which source frame a decoded frame is; see :func:`counter_value`.
        audio_offset: Seconds the audio starts after the video (negative: before it).
        sample_aspect_ratio: Pixel aspect ratio such as ``"3/2"`` (square by default).

    Returns:
        ``path``.
    """
    pix_fmt = "yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p"
    if pattern == "counter":
        source = (f"color=c=black:size={width}x{height}:rate={fps}:d={seconds},format={pix_fmt},"
                  f"geq=lum='{COUNTER_BASE}+mod({COUNTER_STEP}*N,{COUNTER_SPAN})':cb=128:cr=128")
    else:
        source = f"testsrc2=size={width}x{height}:rate={fps}:d={seconds}"
    video_delay = ["-itsoffset", str(-audio_offset)] if audio_offset < 0 else []
    audio_delay = ["-itsoffset", str(audio_offset)] if audio_offset > 0 else []
    inputs = [*video_delay, "-f", "lavfi", "-i", source]
    for n in range(audio_streams):
        frequency = AUDIO_FREQUENCIES[n % len(AUDIO_FREQUENCIES)]
        inputs += [*audio_delay, "-f", "lavfi", "-i",
                   f"sine=frequency={frequency}:sample_rate=48000:d={seconds}"]
    maps = [arg for n in range(audio_streams + 1) for arg in ("-map", f"{n}:0")]
    # B-frames, like most real uploads: decode order differs from presentation order.
    video = ["-c:v", "libx264", "-preset", "ultrafast", "-bf", "2", "-pix_fmt", pix_fmt,
             "-g", "12"]
    filters = [f"setsar={sample_aspect_ratio}"] if sample_aspect_ratio else []
    if vfr:
        # Every other frame lasts twice as long: timestamps 0,1,3,4,6,7,... frame intervals.
        filters.append(f"setpts='(N+floor(N/2))/({fps}*TB)'")
        video += ["-fps_mode", "vfr"]
    if filters:
        video += ["-vf", ",".join(filters)]
    audio = ["-c:a", audio_codec] if audio_streams else []
    target = path if not rotate else path.with_name(f".unrotated-{path.name}")
    ffmpeg(*inputs, *maps, *video, *audio, str(target))
    if rotate:
        # -display_rotation sets the display matrix of the input stream; copy keeps it.
        ffmpeg("-display_rotation", str(rotate), "-i", str(target), "-map", "0", "-c", "copy",
               str(path))
        target.unlink()
    return path


def write_text(path: Path, lines: Sequence[str]) -> Path:
    """Write a text file (playlists, concat lists, plain text disguised as video)."""
    path.write_text("\n".join(lines) + "\n")
    return path


def simulate_gpu_job(input_dir: Path, output_dir: Path, *, crf: int = 18,
                     preset: str = "ultrafast", fps: int = 30) -> list[Path]:
    """Do what the GPU job's encoder does, without a model: every input chunk becomes an
    H.264 yuv420p chunk with no B-frames, padded up to even dimensions at the right/bottom,
    with identical x264 settings per chunk and constant-rate timestamps at ``fps``.

    Returns:
        The written ``output_dir/chunks/00000.mkv ...``.
    """
    outputs = []
    (output_dir / "chunks").mkdir(parents=True, exist_ok=True)
    for chunk in sorted((input_dir / "chunks").glob("*.mkv")):
        out = output_dir / "chunks" / chunk.name
        # Restamped at a made-up constant rate: reassembly must not rely on chunk timestamps.
        ffmpeg("-i", str(chunk), "-vf", f"pad=ceil(iw/2)*2:ceil(ih/2)*2,setpts=N/({fps}*TB)",
               "-fps_mode", "passthrough", "-c:v", "libx264", "-preset", preset,
               "-crf", str(crf), "-bf", "0", "-pix_fmt", "yuv420p", str(out))
        outputs.append(out)
    return outputs
