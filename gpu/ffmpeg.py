"""The one FFmpeg layer: which binary, how a command runs, what a failure carries, and what
untrusted input may open. The GPU job, the CPU side, the benchmarks and the tools all use it.

Standard library only, since the GPU job runs with nothing but torch, numpy, mpi4py and an
FFmpeg binary.

Which binary (:func:`find_ffmpeg`), first match wins:

1. a path given explicitly (the ``--ffmpeg`` option of the GPU job and tools);
2. the ``RESTYLE_FFMPEG`` environment variable (the GPU scripts set it to a binary they carry);
3. the binary of the ``imageio-ffmpeg`` wheel, when that package is importable (the CPU side
   and CI: a pinned FFmpeg that does not depend on the host's);
4. ``ffmpeg`` on ``PATH``.

Every command runs through :func:`run_ffmpeg` (to completion) or :class:`FFmpegProcess` (a
child process with pipes), and every failure is an :class:`FFmpegError` whose message ends
with the tail of FFmpeg's stderr.

Untrusted input is opened only with :func:`input_argv`: a forced demuxer from
:data:`ALLOWED_DEMUXERS` and local files only, so a playlist or concat list renamed to ``.mp4``
cannot make FFmpeg read other files or URLs.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

FFMPEG_ENV = "RESTYLE_FFMPEG"
QUIET_OPTIONS = ("-hide_banner", "-nostdin", "-loglevel", "error")
"""No banner, no reading from the terminal, errors only: every command starts with these."""
STDERR_TAIL_CHARS = 4000
COMMAND_CHARS = 500
"""How much of a failed command an error message quotes (a split's argv can be 100 kB)."""

ALLOWED_DEMUXERS = ("mov", "matroska", "avi", "mpegts", "mpeg", "flv", "ogg", "asf", "nut")
"""Demuxers of plain media containers. Anything else (hls, concat, image2, tee, data, ...) can
reference other files or URLs, or is not a video container at all."""
FORMAT_WHITELIST = ",".join(ALLOWED_DEMUXERS)
CLI_PROTOCOLS = "file,pipe"
"""Protocols the FFmpeg command line may use on untrusted input."""
LIBRARY_PROTOCOLS = "file"
"""Protocols an in-process open (PyAV, on the CPU side) may use: the upload is a local file."""


class InvalidMediaError(ValueError):
    """The input is not a video this pipeline accepts; the message says why."""


class FFmpegError(RuntimeError):
    """FFmpeg failed, or what it wrote is not what was asked for.

    ``str()`` is the message followed by the tail of FFmpeg's stderr, when there is one.

    Attributes:
        argv: The command, when one ran.
        returncode: Its exit status, when it exited.
        stderr: The last :data:`STDERR_TAIL_CHARS` characters of what it wrote to stderr.
    """

    def __init__(self, message: str, stderr: str = "", *, argv: Sequence[str] = (),
                 returncode: int | None = None) -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr = stderr[-STDERR_TAIL_CHARS:]
        tail = self.stderr.strip()
        super().__init__(f"{message}\n{tail}" if tail else message)


def find_ffmpeg(explicit: str | None = None) -> str:
    """The FFmpeg binary, by the precedence in the module docstring.

    Raises:
        FileNotFoundError: The chosen candidate does not exist, or there is none.
    """
    candidate = explicit or os.environ.get(FFMPEG_ENV)
    if not candidate:
        try:
            import imageio_ffmpeg

            candidate = imageio_ffmpeg.get_ffmpeg_exe()
        except (ImportError, RuntimeError):
            candidate = shutil.which("ffmpeg")
    if not candidate or not (Path(candidate).is_file() or shutil.which(candidate)):
        raise FileNotFoundError(
            f"ffmpeg binary not found ({candidate or 'nothing on PATH'}): pass --ffmpeg or set "
            f"{FFMPEG_ENV}"
        )
    return candidate


def base_argv(ffmpeg: str) -> list[str]:
    """FFmpeg quiet, non-interactive, overwriting its (temporary) outputs."""
    return [ffmpeg, *QUIET_OPTIONS, "-y"]


def input_options(demuxer: str) -> dict[str, str]:
    """The options that open untrusted input with exactly ``demuxer`` over local files only.

    Forcing ``-f`` stops FFmpeg from re-probing the file into a playlist demuxer, and the
    whitelists refuse any other demuxer or protocol a nested reference might ask for.

    Raises:
        InvalidMediaError: ``demuxer`` is not in :data:`ALLOWED_DEMUXERS`.
    """
    if demuxer not in ALLOWED_DEMUXERS:
        raise InvalidMediaError(f"demuxer {demuxer!r} is not allowed")
    return {"protocol_whitelist": CLI_PROTOCOLS, "format_whitelist": FORMAT_WHITELIST,
            "f": demuxer}


def input_argv(src: Path, demuxer: str) -> list[str]:
    """:func:`input_options` for ``src``, as command-line arguments ending in ``-i src``."""
    options = [arg for name, value in input_options(demuxer).items() for arg in (f"-{name}", value)]
    return [*options, "-i", str(src)]


def _describe(argv: Sequence[str]) -> str:
    command = shlex.join(argv)
    return command if len(command) <= COMMAND_CHARS else command[:COMMAND_CHARS] + " ..."


def run_ffmpeg(argv: Sequence[str], *, discard_stdout: bool = False) -> bytes:
    """Run one FFmpeg command to completion and return its stdout.

    Args:
        argv: The command.
        discard_stdout: Send stdout to the null device instead (a decoder being timed).

    Raises:
        FFmpegError: It exited non-zero; the error carries argv, status and stderr.
    """
    proc = subprocess.run(list(argv), stdin=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          stdout=subprocess.DEVNULL if discard_stdout else subprocess.PIPE)
    if proc.returncode != 0:
        raise FFmpegError(f"ffmpeg exited with status {proc.returncode}: {_describe(argv)}",
                          proc.stderr.decode(errors="replace"), argv=argv,
                          returncode=proc.returncode)
    return proc.stdout or b""


class FFmpegProcess:
    """An FFmpeg child process fed or read through pipes, its stderr kept for error reports.

    ``pipes`` are :class:`subprocess.Popen` keywords (``stdin=subprocess.PIPE``, ...).
    :meth:`error` waits for it and builds the :class:`FFmpegError`; :meth:`stop` kills it if
    it still runs and closes everything.
    """

    def __init__(self, argv: list[str], **pipes: int) -> None:
        self.argv = argv
        self._stderr: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(argv, stderr=self._stderr, **pipes)

    def error(self, message: str) -> FFmpegError:
        """``message`` with the command and FFmpeg's stderr, once the process has exited."""
        self.proc.wait()
        self._stderr.seek(0)
        return FFmpegError(f"{message}: {_describe(self.argv)}",
                           self._stderr.read().decode(errors="replace"), argv=self.argv,
                           returncode=self.proc.returncode)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                with contextlib.suppress(BrokenPipeError):
                    stream.close()
        self._stderr.close()


@dataclass(frozen=True)
class PacketListing:
    """The first video stream of a file as FFmpeg lists it without decoding it.

    Attributes:
        width: Coded width (0 when FFmpeg found no picture size).
        height: Coded height.
        packets: Number of packets; one per frame for the intra-only and image codecs this
            is used on.
    """

    width: int
    height: int
    packets: int


def packet_listing_argv(ffmpeg: str, path: Path) -> list[str]:
    """List the packets of ``path``'s first video stream on stdout (stream copy: nothing is
    decoded), in FFmpeg's ``framecrc`` format, which is meant to be read by programs."""
    return [*base_argv(ffmpeg), "-i", str(path), "-map", "0:v:0", "-c", "copy",
            "-f", "framecrc", "pipe:1"]


def parse_packet_listing(listing: bytes) -> PacketListing:
    """Read the output of :func:`packet_listing_argv`.

    Raises:
        FFmpegError: It has no ``#dimensions`` line for the stream.
    """
    width = height = packets = 0
    found = False
    for line in listing.decode(errors="replace").splitlines():
        if line.startswith("#dimensions 0:"):
            width, height = (int(side) for side in line.split(":", 1)[1].strip().split("x"))
            found = True
        elif line.startswith("0,"):
            packets += 1
    if not found:
        raise FFmpegError("FFmpeg's packet listing names no picture size")
    return PacketListing(width, height, packets)


def list_packets(ffmpeg: str, path: Path) -> PacketListing:
    """:class:`PacketListing` of ``path``.

    Raises:
        FFmpegError: FFmpeg cannot read the file.
    """
    return parse_packet_listing(run_ffmpeg(packet_listing_argv(ffmpeg, path)))
