"""tools/assemble_content.py: FFmpeg argv builders, crop sampling and frame decoding.

The package downloads themselves are not exercised here (they need a registry); the pieces
that turn package files into the content set are, with real ffmpeg on a lavfi clip.
"""

from __future__ import annotations

import random
import subprocess
from pathlib import Path

from PIL import Image

from gpu.ffmpeg import find_ffmpeg
from tools import assemble_content as ac

FFMPEG = find_ffmpeg()


def test_frame_png_argv_seeks_before_input_and_writes_one_png_to_stdout() -> None:
    argv = ac.frame_png_argv("ffmpeg", Path("in.avi"), 2.5)
    assert argv == ["ffmpeg", "-v", "error", "-ss", "2.500", "-i", "in.avi", "-frames:v", "1",
                    "-f", "image2pipe", "-c:v", "png", "-"]


def test_clip_argv_cuts_video_only_h264_yuv420p() -> None:
    argv = ac.clip_argv("ffmpeg", Path("in.mp4"), 1.0, 6.0, Path("out.mp4"))
    assert argv[:8] == ["ffmpeg", "-v", "error", "-y", "-ss", "1.000", "-i", "in.mp4"]
    assert argv[argv.index("-t") + 1] == "6.000"
    assert argv[argv.index("-c:v") + 1] == "libx264"
    assert argv[argv.index("-pix_fmt") + 1] == "yuv420p"
    assert "-an" in argv and argv[-1] == "out.mp4"


def test_crop_counts_sum_exactly_and_favour_larger_sources() -> None:
    small, large = (ac.Source("pypi", "p", f"{n}.png") for n in ("small", "large"))
    tiny = ac.Source("pypi", "p", "tiny.png")
    counts = ac.crop_count_per_source(
        {small: (640, 480), large: (5120, 2880), tiny: (64, 64)}, total=50)
    assert sum(counts.values()) == 50
    assert counts[large] > counts[small] > counts[tiny] >= 2


def test_random_square_crops_are_seeded_square_and_inside_the_image() -> None:
    image = Image.linear_gradient("L").resize((900, 600)).convert("RGB")
    first = ac.random_square_crops(image, 5, random.Random("seed"), 64)
    again = ac.random_square_crops(image, 5, random.Random("seed"), 64)
    assert [box for _, box in first] == [box for _, box in again]
    assert [c.tobytes() for c, _ in first] == [c.tobytes() for c, _ in again]
    for crop, (left, top, size) in first:
        assert crop.size == (64, 64)
        assert ac.MIN_CROP_SOURCE_SIDE <= size <= 600
        assert 0 <= left <= 900 - size and 0 <= top <= 600 - size


def test_decode_frame_and_square_at_on_a_real_clip(tmp_path: Path) -> None:
    clip = tmp_path / "clip.mp4"
    subprocess.run([FFMPEG, "-v", "error", "-f", "lavfi", "-i",
                    "testsrc2=size=320x180:rate=10:duration=2", "-pix_fmt", "yuv420p",
                    str(clip)], check=True)
    frame = ac.decode_frame(FFMPEG, clip, 1.0)
    assert frame.size == (320, 180) and frame.mode == "RGB"
    assert ac.decode_frame(FFMPEG, clip, 1.5).tobytes() != frame.tobytes()  # testsrc2 moves
    square = ac.square_at(frame, 128, anchor=1.0)
    assert square.size == (128, 128)
    # anchor=1 keeps the right edge: compare with the scaled frame's rightmost square.
    scaled = frame.resize((round(320 * 128 / 180), 128), Image.Resampling.LANCZOS)
    assert square.tobytes() == scaled.crop((scaled.width - 128, 0, scaled.width, 128)).tobytes()


def test_heldout_frames_and_eval_clips_never_feed_training() -> None:
    training_clips = set(ac.TRAIN_FRAME_TIMES)
    evaluation = {f.source for f in ac.HELDOUT_FRAMES} | {c.source for c in ac.EVAL_CLIPS}
    assert not training_clips & evaluation
    assert not {s.key for s in ac.PHOTOS} & {s.key for s in evaluation}
    for frame in ac.HELDOUT_FRAMES:
        for clip in ac.EVAL_CLIPS:
            if clip.source == frame.source:
                assert not clip.start_s <= frame.time_s < clip.start_s + clip.duration_s
