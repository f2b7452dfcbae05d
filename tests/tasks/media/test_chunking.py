"""Chunk pixel formats end to end on the CPU, with the real FFmpeg binary.

The split picks ``yuv420p`` or ``gbrp`` per source
(:func:`tasks.media.chunking.choose_chunk_format`) and the GPU job reads the chunks as raw
planes and converts them to RGB with torch (here on the CPU device): both must give the colours
FFmpeg's own RGB conversion of the source gives.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from gpu.ffmpeg import find_ffmpeg, run_ffmpeg
from gpu.jobdir import YCBCR_MATRICES, EncodeSettings, InputFormat
from gpu.stylize import (
    FrameLayout,
    gbrp_to_rgb,
    raw_to_rgb,
    rgb_to_yuv420,
    upsample_chroma,
    yuv420_to_rgb,
)
from gpu.video_io import FrameReader, decode_argv
from tasks import media
from tasks.media.chunking import (
    FALLBACK_FPS,
    ChunkFormat,
    build_split_argv,
    choose_chunk_format,
)
from tasks.settings import LimitSettings

FFMPEG = find_ffmpeg()
WIDTH, HEIGHT, FRAMES = 96, 64, 4
# FFmpeg converting YUV to RGB as the GPU job does, following the source's matrix tag: careful
# rounding, chroma interpolated bilinearly from H.264's default siting (FFmpeg's scaler would
# otherwise take 4:2:0 chroma that does not say where it sits to be centred between columns,
# half a chroma sample to the right of H.264's, and interpolate it bicubically).
AS_THE_JOB_DOES = "scale=flags=accurate_rnd+full_chroma_int+bilinear:in_chroma_loc=left"
# The split's flags for planar RGB chunks of untagged YUV sources.
SPLIT_FLAGS = "scale=flags=accurate_rnd+full_chroma_int"
# Smooth, saturated colour waves that move from frame to frame (geq is deterministic, unlike
# lavfi's gradients source).
WAVES = ("format=gbrp,geq=r='128+110*sin(X/9+N/2)':g='128+100*cos(Y/8-X/23)'"
         ":b='128+110*sin((X+Y)/13-N/3)'")


def make_source(path: Path, tag: str | None, *, full_range: bool = False,
                pattern: str = WAVES) -> Path:
    """A lossless H.264 4:2:0 clip drawn by the filter ``pattern`` in matrix ``tag`` (FFmpeg's
    colorspace name), tagged with it, or untagged when ``tag`` is None.

    The patterns are smooth: FFmpeg converts the planar RGB chunks of tagged sources with its
    default flags, which at sharp colour edges are tens of levels from its careful conversion."""
    matrix = tag or "bt601"
    colour_range = "pc" if full_range else "tv"
    tags = (["-colorspace", tag] if tag else []) + ["-color_range", colour_range]
    untag = "" if tag else ",setparams=colorspace=unknown"
    run_ffmpeg([FFMPEG, "-v", "error", "-y", "-f", "lavfi",
                "-i", f"color=black:size={WIDTH}x{HEIGHT}:rate=25", "-frames:v", str(FRAMES),
                "-vf", f"{pattern},scale=out_color_matrix={matrix}:out_range={colour_range}"
                       f":flags=accurate_rnd+full_chroma_int,format=yuv420p{untag}",
                *tags, "-c:v", "libx264", "-qp", "0", str(path)])
    return path


def ffmpeg_rgb(path: Path, *filters: str) -> np.ndarray:
    """Every frame of ``path`` converted to RGB by FFmpeg, as ``(N, H, W, 3)`` floats."""
    vf = ["-vf", ",".join(filters)] if filters else []
    data = run_ffmpeg([FFMPEG, "-v", "error", "-i", str(path), *vf, "-f", "rawvideo",
                       "-pix_fmt", "rgb24", "-"])
    return np.frombuffer(data, np.uint8).reshape(-1, HEIGHT, WIDTH, 3).astype(float)


def gpu_rgb(chunk: Path, layout: FrameLayout) -> np.ndarray:
    """A chunk as the GPU job sees it (raw planes, converted by torch): ``(N, H, W, 3)``, 0-255."""
    frames = np.empty((FRAMES + 2, layout.frame_bytes), np.uint8)
    with FrameReader(FFMPEG, chunk, layout.width, layout.height, layout.pix_fmt,
                     threads=2) as reader:
        count = reader.read_into(frames)
    assert count == FRAMES
    rgb = raw_to_rgb(torch.from_numpy(frames[:count]), layout)
    assert rgb.shape == (FRAMES, 3, layout.height, layout.width)
    return rgb.permute(0, 2, 3, 1).numpy() * 255


def raw_planes(path: Path, pix_fmt: str) -> np.ndarray:
    """Every frame of ``path`` as raw ``pix_fmt`` bytes, one row per frame."""
    argv = decode_argv(FFMPEG, path, "yuv420p")
    argv[argv.index("-pix_fmt") + 1] = pix_fmt  # a source's own format, yuvj420p say
    return np.frombuffer(run_ffmpeg(argv), np.uint8).reshape(FRAMES, -1)


def split(src: Path, work: Path) -> tuple[Path, FrameLayout]:
    """``src`` probed and cut as the CPU side does: its one chunk and how the job reads it."""
    probe = media.probe(src, LimitSettings())
    manifest = media.split_video(src, probe, work, 100, EncodeSettings())
    assert len(manifest.chunks) == 1
    return work / manifest.chunks[0].file, FrameLayout.of(manifest)


def split_rgb(src: Path, work: Path, rgb_matrix: str | None = None) -> Path:
    """``src`` cut into planar RGB chunks, as the CPU side cuts the sources the GPU cannot take."""
    work.mkdir(parents=True)
    run_ffmpeg(build_split_argv(FFMPEG, src, "mov", 0, [], work / "%05d.mkv",
                                ChunkFormat("gbrp", rgb_matrix=rgb_matrix)))
    return work / "00000.mkv"


def off(rgb: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    gap = np.abs(rgb - reference)
    return float(gap.mean()), float(gap.max())


# --------------------------------------------------------------------------- choosing


def test_chunk_format_follows_the_source() -> None:
    def fmt(family: str, width: int, height: int, tag: str | None,
            full: bool = False) -> tuple[str, str | None, bool, str | None]:
        chosen = choose_chunk_format(family, width, height, tag, full)
        assert chosen.reason.startswith(chosen.pix_fmt)
        return chosen.pix_fmt, chosen.matrix, chosen.full_range_source, chosen.rgb_matrix

    assert fmt("yuv", 1920, 1080, "bt709") == ("yuv420p", "bt709", False, None)
    assert fmt("yuv", 640, 480, "smpte170m") == ("yuv420p", "bt601", False, None)
    assert fmt("yuv", 720, 576, "bt470bg") == ("yuv420p", "bt601", False, None)
    assert fmt("yuv", 3840, 2160, "bt2020nc") == ("yuv420p", "bt2020nc", False, None)
    assert fmt("yuv", 640, 480, "fcc") == ("yuv420p", "fcc", False, None)
    assert fmt("yuv", 1920, 1036, "smpte240m") == ("yuv420p", "smpte240m", False, None)
    # Untagged: what players assume, by the shorter side.
    assert fmt("yuv", 1280, 720, None) == ("yuv420p", "bt709", False, None)
    assert fmt("yuv", 720, 1280, None) == ("yuv420p", "bt709", False, None)
    assert fmt("yuv", 1280, 718, None) == ("yuv420p", "bt601", False, None)
    assert fmt("yuv", 1920, 1080, "bt709", full=True) == ("yuv420p", "bt709", True, None)
    # Everything else is converted to RGB by the split, as before.
    assert fmt("yuv", 1279, 720, None) == ("gbrp", None, False, "bt709")
    assert fmt("yuv", 640, 481, "bt709") == ("gbrp", None, False, None)
    assert fmt("yuv", 640, 480, "ycgco") == ("gbrp", None, False, None)
    assert fmt("yuv", 640, 480, "bt2020c") == ("gbrp", None, False, None)
    assert fmt("rgb", 640, 480, "gbr", full=True) == ("gbrp", None, False, None)
    assert fmt("other", 640, 480, None) == ("gbrp", None, False, None)
    assert choose_chunk_format("yuv", 640, 480, None, False).input_format == \
        InputFormat("yuv420p", "bt601")
    assert choose_chunk_format("yuv", 65, 48, None, False).input_format == InputFormat("gbrp")
    with pytest.raises(ValueError, match="family 'bayer'"):
        choose_chunk_format("bayer", 640, 480, None, False)


# --------------------------------------------------------------------------- conversion


def test_planar_rgb_planes_are_green_blue_red() -> None:
    rows = torch.tensor([[10, 11, 20, 21, 30, 31]], dtype=torch.uint8)  # G G B B R R, 2x1
    rgb = gbrp_to_rgb(rows, 2, 1) * 255
    assert rgb.round().to(torch.uint8).tolist() == [[[[30, 31]], [[10, 11]], [[20, 21]]]]
    assert rgb.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("matrix", list(YCBCR_MATRICES))
def test_yuv420_to_rgb_inverts_rgb_to_yuv420_with_left_siting(matrix: str) -> None:
    """On linear ramps, linear interpolation at the sited positions is exact: chroma taken to
    sit anywhere else (centred between columns, say) would be off by half a pixel's slope."""
    rows, columns = torch.meshgrid(torch.arange(16.0), torch.arange(24.0), indexing="ij")
    ramps = torch.stack([0.2 + 0.03 * columns, 0.7 - 0.02 * rows, 0.1 + 0.01 * (columns + rows)])
    assert ramps.min() > 0 and ramps.max() < 1
    # Encode with this matrix: rgb_to_yuv420's BT.709 coefficients swapped for the matrix's.
    kr, kb = YCBCR_MATRICES[matrix]
    red, green, blue = ramps
    luma = kr * red + (1 - kr - kb) * green + kb * blue
    ycbcr = torch.stack([luma, (blue - luma) / (2 * (1 - kb)), (red - luma) / (2 * (1 - kr))])
    chroma = ycbcr[1:, 0::2] / 2 + ycbcr[1:, 1::2] / 2  # rows averaged in pairs
    padded = torch.nn.functional.pad(chroma, (1, 1), mode="replicate")
    sited = padded[..., 0:-2:2] / 4 + padded[..., 1:-1:2] / 2 + padded[..., 2::2] / 4
    frame = torch.cat([(16 + 219 * luma).flatten(), (128 + 224 * sited).flatten()])
    if matrix == "bt709":  # the very encoding of the job's output side
        assert (rgb_to_yuv420(ramps[None])[0].float() - frame.round()).abs().max() <= 1
    as_bytes = yuv420_to_rgb(frame.round()[None].to(torch.uint8), 24, 16, matrix)
    assert as_bytes.is_contiguous(memory_format=torch.channels_last)
    # Away from the edges (where both filters repeat the last sample) the ramps come back
    # exactly but for the 8-bit rounding of Y, Cb and Cr, and exactly when not rounded. Chroma
    # taken to sit half a sample off would be about 4 levels off.
    inner = (slice(None), slice(1, -1), slice(2, -1))
    assert (as_bytes[0] - ramps)[inner].abs().max() * 255 < 2
    unrounded = (yuv420_to_rgb(frame[None], 24, 16, matrix)[0] - ramps)[inner].abs().max()
    assert unrounded * 255 < 0.01, f"{unrounded * 255:.3f} levels off"


def test_upsampled_chroma_sits_on_even_columns_between_rows() -> None:
    chroma = torch.tensor([[[[0.0, 8.0], [16.0, 24.0]]]])
    assert upsample_chroma(chroma)[0, 0].tolist() == [
        [0.0, 4.0, 8.0, 8.0],     # row 0: 3/4 of chroma row 0, 1/4 of itself (edge)
        [4.0, 8.0, 12.0, 12.0],   # row 1: 3/4 of row 0, 1/4 of row 1
        [12.0, 16.0, 20.0, 20.0],  # row 2: 3/4 of row 1, 1/4 of row 0
        [16.0, 20.0, 24.0, 24.0],  # row 3: 3/4 of row 1, 1/4 of itself (edge)
    ]


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize(
    ("tag", "matrix", "wrong"),
    [("bt709", "bt709", "bt601"), ("smpte170m", "bt601", "bt709"), ("bt470bg", "bt601", "bt709"),
     ("bt2020nc", "bt2020nc", "bt709"), (None, "bt601", "bt709")],
)
def test_yuv_and_rgb_chunks_decode_to_ffmpegs_colours(tmp_path: Path, tag: str | None,
                                                      matrix: str, wrong: str) -> None:
    """Both chunk formats of one clip give the GPU what FFmpeg's own conversion gives.

    YUV chunks: what FFmpeg gives converting the source as the job converts (the same
    interpolation, from the same siting), but for rounding. Planar RGB chunks are converted by
    FFmpeg in the split, as ever: with its default flags for tagged sources, with careful ones
    and the assumed matrix for untagged ones. An untagged SD source is BT.601.
    """
    src = make_source(tmp_path / "src.mp4", tag)
    untagged = "" if tag else ":in_color_matrix=bt601"
    reference = ffmpeg_rgb(src, AS_THE_JOB_DOES + untagged)

    yuv_chunk, layout = split(src, tmp_path / "yuv")
    assert layout == FrameLayout(WIDTH, HEIGHT, InputFormat("yuv420p", matrix))
    yuv = gpu_rgb(yuv_chunk, layout)
    mean, worst = off(yuv, reference)
    assert mean < 0.3 and worst < 1.5, (mean, worst)
    # The test can tell matrices apart: the wrong one is several levels off on average.
    mistaken = FrameLayout(WIDTH, HEIGHT, InputFormat("yuv420p", wrong))
    assert off(gpu_rgb(yuv_chunk, mistaken), reference)[0] > 3

    rgb_chunk = split_rgb(src, tmp_path / "rgb", None if tag else "bt601")
    rgb = gpu_rgb(rgb_chunk, FrameLayout(WIDTH, HEIGHT, InputFormat("gbrp")))
    assert np.array_equal(rgb, ffmpeg_rgb(rgb_chunk)), "planar RGB is only reordered"
    mean, worst = off(rgb, ffmpeg_rgb(src, *([] if tag else [SPLIT_FLAGS + untagged])))
    assert mean < 0.2 and worst <= 2, (mean, worst)


def test_full_range_source_becomes_limited_range(tmp_path: Path) -> None:
    src = make_source(tmp_path / "full.mp4", "bt709", full_range=True,
                      pattern="format=gbrp,geq=g='clip(300*X/W-20,0,255)':"
                              "b='clip(300*X/W-20+70*sin(Y/7+N),0,255)':r='clip(300*Y/H-20,0,255)'")
    probe = media.probe(src, LimitSettings())
    assert probe.video.full_range and probe.video.tagged_matrix == "bt709"
    chunk, layout = split(src, tmp_path / "in")
    assert layout.input_format == InputFormat("yuv420p", "bt709")
    planes = raw_planes(chunk, "yuv420p").astype(int)
    source = raw_planes(src, probe.video.pixel_format).astype(int)
    luma = WIDTH * HEIGHT
    assert source[:, :luma].min() < 16 and source[:, :luma].max() > 235, "not a full-range test"
    # Y: 0-255 -> 16-235; Cb, Cr: 0-255 around 128 -> 16-240.
    assert np.abs(planes[:, :luma] - (16 + source[:, :luma] * 219 / 255)).max() <= 1
    assert np.abs(planes[:, luma:] - (128 + (source[:, luma:] - 128) * 224 / 255)).max() <= 1
    # Limited range has fewer levels: one more rounding (of Y, Cb and Cr, which the matrix
    # amplifies in R, G and B) than FFmpeg's straight conversion.
    mean, worst = off(gpu_rgb(chunk, layout), ffmpeg_rgb(src, AS_THE_JOB_DOES))
    assert mean < 1 and worst < 4, (mean, worst)


def test_rgb_source_stays_rgb_and_exact(tmp_path: Path) -> None:
    src = tmp_path / "rgb.mp4"
    run_ffmpeg([FFMPEG, "-v", "error", "-f", "lavfi", "-i",
                f"testsrc2=size={WIDTH}x{HEIGHT}:rate=25", "-frames:v", str(FRAMES),
                "-c:v", "libx264rgb", "-qp", "0", str(src)])
    video = media.probe(src, LimitSettings()).video
    assert (video.pixel_family, video.assumed_matrix) == ("rgb", None)
    chunk, layout = split(src, tmp_path / "in")
    assert layout.input_format == InputFormat("gbrp")
    assert np.array_equal(gpu_rgb(chunk, layout), ffmpeg_rgb(src))


def test_odd_sized_yuv_source_is_cut_as_rgb(tmp_path: Path) -> None:
    src = tmp_path / "odd.mp4"
    run_ffmpeg([FFMPEG, "-v", "error", "-f", "lavfi", "-i",
                f"color=black:size={WIDTH - 1}x{HEIGHT - 1}:rate=25", "-frames:v", str(FRAMES),
                "-vf", WAVES, "-pix_fmt", "yuv444p", "-c:v", "libx264", "-qp", "0", str(src)])
    chunk, layout = split(src, tmp_path / "in")
    assert (layout.width, layout.height, layout.input_format) == \
        (WIDTH - 1, HEIGHT - 1, InputFormat("gbrp"))
    frames = np.empty((FRAMES, layout.frame_bytes), np.uint8)
    with FrameReader(FFMPEG, chunk, layout.width, layout.height, "gbrp") as reader:
        assert reader.read_into(frames) == FRAMES
    with pytest.raises(ValueError, match="yuv420p frames need even dimensions, got 95x63"):
        _ = FrameLayout(WIDTH - 1, HEIGHT - 1, InputFormat("yuv420p", "bt601")).frame_bytes


GB = 10**9


@pytest.mark.parametrize(("requested", "backend", "raw_gb", "free_gb", "codec"), [
    ("auto", "local", 3, 100, "rawvideo"),
    ("auto", "local", 50, 100, "rawvideo"),
    ("auto", "local", 51, 100, "utvideo"),  # over half the free disk
    ("auto", "azureml", 3, 100, "utvideo"),  # uploaded: the fewer bytes
    ("utvideo", "local", 3, 100, "utvideo"),
    ("rawvideo", "azureml", 3, 100, "rawvideo"),
    ("rawvideo", "local", 90, 100, "rawvideo"),  # asked for and fits
])
def test_chunk_codec_choice(requested: str, backend: str, raw_gb: int, free_gb: int,
                            codec: str) -> None:
    chosen, why = media.choose_chunk_codec(requested, backend, raw_gb * GB, free_gb * GB)
    assert chosen == codec
    assert why


def test_raw_chunks_that_do_not_fit_are_refused_before_any_work() -> None:
    with pytest.raises(media.InsufficientDiskError, match=r"need 120\.00 GB.* 100\.00 GB free"):
        media.choose_chunk_codec("rawvideo", "local", 120 * GB, 100 * GB)


def test_raw_chunks_bytes_counts_every_frame_in_its_chunk_format(tmp_path: Path) -> None:
    src = tmp_path / "clip.mp4"
    run_ffmpeg([FFMPEG, "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i",
                f"testsrc2=size={WIDTH}x{HEIGHT}:rate=10", "-frames:v", "7", "-c:v", "libx264",
                "-pix_fmt", "yuv420p", str(src)])
    video = media.probe(src, LimitSettings()).video
    assert video.chunk_format.pix_fmt == "yuv420p"
    assert media.raw_chunks_bytes(video) == 7 * WIDTH * HEIGHT * 3 // 2
    manifest = media.split_video(src, media.probe(src, LimitSettings()), tmp_path / "in", 3,
                                 EncodeSettings(), "rawvideo")
    written = sum(p.stat().st_size for p in (tmp_path / "in" / "chunks").iterdir())
    assert (written, len(manifest.chunks)) == (media.raw_chunks_bytes(video), 3)


def test_the_chunk_plan_takes_length_codec_and_format_from_one_place() -> None:
    video = media.SourceVideo(demuxer="mov", stream_index=0, frame_count=100, display_width=64,
                              display_height=48, fps=25.0, pixel_family="yuv",
                              tagged_matrix=None, full_range=False)
    plan = media.plan_chunks(video, 2.0, "auto", "local", 100 * GB)
    assert plan.chunk_frames == 50
    assert plan.chunk_format == ChunkFormat("yuv420p", "bt601", codec="rawvideo",
                                            reason=video.chunk_format.reason)
    assert plan.describe() == (f"rawvideo chunks ({plan.codec_reason}) of at most 50 frames, "
                               "yuv420p: YUV source, bt601 matrix (assumed, untagged), "
                               "limited range")
    assert media.plan_chunks(video, 2.0, "auto", "azureml", 100 * GB).chunk_format.codec == \
        "utvideo"
    # A single frame has no rate: chunk lengths assume FALLBACK_FPS.
    still = dataclasses.replace(video, fps=0.0, frame_count=1)
    assert media.plan_chunks(still, 2.0, "utvideo", "local", GB).chunk_frames == \
        round(2.0 * FALLBACK_FPS)
    odd = dataclasses.replace(video, display_width=65)
    assert media.plan_chunks(odd, 2.0, "utvideo", "local", GB).chunk_format.pix_fmt == "gbrp"
    with pytest.raises(media.InsufficientDiskError):
        media.plan_chunks(video, 2.0, "rawvideo", "local", 1000)
