"""gpu/ffmpeg.py: the one locator, runner, error type and input allowlist, with the real binary."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import imageio_ffmpeg
import pytest

from gpu import ffmpeg as ff
from gpu.ffmpeg import FFmpegError, InvalidMediaError

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()


def fake_binary(path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


@pytest.fixture
def no_imageio(monkeypatch: pytest.MonkeyPatch) -> None:
    """imageio-ffmpeg not installed: importing it fails."""
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)


def test_locator_precedence_explicit_then_env_then_imageio_then_path(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    explicit = fake_binary(tmp_path / "explicit" / "ffmpeg")
    from_env = fake_binary(tmp_path / "env" / "ffmpeg")
    on_path = fake_binary(tmp_path / "bin" / "ffmpeg")
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    monkeypatch.setenv(ff.FFMPEG_ENV, from_env)
    assert ff.find_ffmpeg(explicit) == explicit
    assert ff.find_ffmpeg() == from_env
    monkeypatch.delenv(ff.FFMPEG_ENV)
    assert ff.find_ffmpeg() == FFMPEG  # the wheel's binary before the one on PATH
    with monkeypatch.context() as patch:
        patch.setitem(sys.modules, "imageio_ffmpeg", None)
        assert ff.find_ffmpeg() == on_path


def test_locator_refuses_what_does_not_exist(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                             no_imageio: None) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.delenv(ff.FFMPEG_ENV, raising=False)
    with pytest.raises(FileNotFoundError, match="nothing on PATH.*RESTYLE_FFMPEG"):
        ff.find_ffmpeg()
    monkeypatch.setenv(ff.FFMPEG_ENV, str(tmp_path / "missing-ffmpeg"))
    with pytest.raises(FileNotFoundError, match="missing-ffmpeg"):
        ff.find_ffmpeg()
    with pytest.raises(FileNotFoundError, match="also-missing"):
        ff.find_ffmpeg(str(tmp_path / "also-missing"))


def test_error_message_ends_with_the_tail_of_stderr() -> None:
    stderr = "x" * ff.STDERR_TAIL_CHARS + "the cause\n"
    error = FFmpegError("ffmpeg failed", stderr, argv=["ffmpeg", "-i", "a"], returncode=1)
    assert error.stderr == stderr[-ff.STDERR_TAIL_CHARS:] and error.stderr.endswith("cause\n")
    assert str(error).startswith("ffmpeg failed\n") and str(error).endswith("the cause")
    assert (error.argv, error.returncode) == (["ffmpeg", "-i", "a"], 1)
    assert str(FFmpegError("no stderr")) == "no stderr"


def test_runner_returns_stdout_and_raises_with_argv_status_and_stderr(tmp_path: Path) -> None:
    assert ff.run_ffmpeg([FFMPEG, "-hide_banner", "-version"]).startswith(b"ffmpeg version")
    assert ff.run_ffmpeg([FFMPEG, "-hide_banner", "-version"], discard_stdout=True) == b""
    argv = [*ff.base_argv(FFMPEG), "-i", str(tmp_path / "absent.mkv"), "-f", "null", "-"]
    for discard in (False, True):
        with pytest.raises(FFmpegError, match="absent.mkv.*\n.*No such file") as caught:
            ff.run_ffmpeg(argv, discard_stdout=discard)
        assert caught.value.argv == argv and caught.value.returncode not in (0, None)
        assert "No such file or directory" in caught.value.stderr
        assert str(caught.value).startswith(f"ffmpeg exited with status {caught.value.returncode}")


def test_a_long_command_is_shortened_in_the_message_but_kept_whole() -> None:
    argv = [FFMPEG, "-segment_frames", ",".join(str(n) for n in range(10_000)), "-bogus"]
    with pytest.raises(FFmpegError) as caught:
        ff.run_ffmpeg(argv)
    first_line = str(caught.value).splitlines()[0]
    assert len(first_line) < ff.COMMAND_CHARS + 100 and first_line.endswith(" ...")
    assert caught.value.argv == argv


def test_a_piped_process_reports_its_stderr(tmp_path: Path) -> None:
    process = ff.FFmpegProcess([*ff.base_argv(FFMPEG), "-i", str(tmp_path / "gone.mkv"),
                                "-f", "rawvideo", "pipe:1"], stdout=subprocess.PIPE)
    try:
        assert process.proc.stdout is not None and process.proc.stdout.read() == b""
        error = process.error("decode failed")
    finally:
        process.stop()
    assert str(error).startswith("decode failed: ") and "gone.mkv" in error.stderr
    assert error.returncode not in (0, None)


def test_untrusted_input_is_opened_with_one_allowlisted_demuxer_over_local_files() -> None:
    assert ff.FORMAT_WHITELIST.split(",") == list(ff.ALLOWED_DEMUXERS)
    for playlist_or_reference in ("hls", "concat", "image2", "tee", "data", "dash"):
        assert playlist_or_reference not in ff.ALLOWED_DEMUXERS
        with pytest.raises(InvalidMediaError, match=f"'{playlist_or_reference}' is not allowed"):
            ff.input_options(playlist_or_reference)
    assert ff.input_argv(Path("/in/a.mkv"), "matroska") == [
        "-protocol_whitelist", "file,pipe", "-format_whitelist", ff.FORMAT_WHITELIST,
        "-f", "matroska", "-i", "/in/a.mkv"]
    assert ff.LIBRARY_PROTOCOLS == "file"


def test_ffmpeg_refuses_a_network_input_under_the_allowlist() -> None:
    """The protocol check happens before FFmpeg connects: nothing leaves the machine."""
    argv = [*ff.base_argv(FFMPEG), *ff.input_argv(Path("http://127.0.0.1:9/a.mkv"), "matroska"),
            "-f", "null", "-"]
    with pytest.raises(FFmpegError, match="not on whitelist"):
        ff.run_ffmpeg(argv)


def test_packet_listing_counts_packets_and_reads_the_size(tmp_path: Path) -> None:
    clip = tmp_path / "clip.mkv"
    ff.run_ffmpeg([*ff.base_argv(FFMPEG), "-f", "lavfi", "-i", "testsrc2=size=96x54:rate=30",
                   "-frames:v", "5", "-c:v", "utvideo", str(clip)])
    assert ff.list_packets(FFMPEG, clip) == ff.PacketListing(96, 54, 5)
    listing = b"#tb 0: 1/1000\n#dimensions 0: 1920x1080\n#sar 0: 1/1\n0, 0, 0, 33, 9, 0x1\n"
    assert ff.parse_packet_listing(listing) == ff.PacketListing(1920, 1080, 1)
    with pytest.raises(FFmpegError, match="no picture size"):
        ff.parse_packet_listing(b"#tb 0: 1/1000\n")
    with pytest.raises(FFmpegError, match="No such file"):
        ff.list_packets(FFMPEG, tmp_path / "absent.mkv")


def test_gpu_ffmpeg_needs_only_the_standard_library() -> None:
    """The GPU job imports it on machines with only torch, numpy and mpi4py."""
    code = ("import sys; import gpu.ffmpeg; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('numpy', 'torch', 'imageio_ffmpeg', 'av', 'ffmpeg')))")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env=env)
    assert out.stdout.strip() == "[]"
