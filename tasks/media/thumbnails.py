"""Before/after thumbnails: one frame of a video, upright, as a small PNG."""

from __future__ import annotations

import os
from pathlib import Path

from gpu.ffmpeg import FFmpegError, run_ffmpeg
from tasks.media.commands import compile_argv, open_input
from tasks.media.probing import demuxer_of, open_media


def build_frame_png_argv(
    src: Path, demuxer: str, frame_index: int, max_width: int, out: Path
) -> list[str]:
    """Decode frame number ``frame_index`` of ``src`` (upright) into a PNG at most ``max_width``."""
    frame = (open_input(src, demuxer)["v:0"]
             .filter("select", f"eq(n,{frame_index})")
             .filter("scale", w=f"min(iw,{max_width})", h=-2, flags="bicubic"))
    return compile_argv(frame.output(str(out), format="image2", fps_mode="passthrough",
                                     update=1, **{"frames:v": 1, "c:v": "png"}))


def extract_frame_png(path: Path, frame_index: int, out_png: Path, max_width: int = 480) -> Path:
    """Save frame number ``frame_index`` of a video, upright, as a PNG at most ``max_width`` wide.

    Used for the before/after thumbnails of the source and the result.

    Raises:
        InvalidMediaError: ``path`` is not an accepted video.
        FFmpegError: FFmpeg failed, or the video has fewer frames than ``frame_index + 1``.
    """
    with open_media(path) as container:
        demuxer = demuxer_of(container)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_png.with_name(f".{out_png.stem}.tmp.png")
    argv = build_frame_png_argv(path, demuxer, frame_index, max_width, tmp)
    run_ffmpeg(argv)
    if not tmp.exists():
        raise FFmpegError(f"frame {frame_index} does not exist in {path.name}", argv=argv,
                          returncode=0)
    os.replace(tmp, out_png)
    return out_png
