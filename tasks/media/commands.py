"""The CPU side's FFmpeg commands with several inputs or a filter graph, built with ffmpeg-python.

A graph compiles to an argv list, so every command is data that tests compare; nothing runs
here (:func:`gpu.ffmpeg.run_ffmpeg` runs them). Untrusted files are opened only through
:func:`open_input`, with the allowlisted demuxer and protocols of :mod:`gpu.ffmpeg`.
"""

from __future__ import annotations

from pathlib import Path

import ffmpeg

from gpu.ffmpeg import QUIET_OPTIONS, find_ffmpeg, input_options


def open_input(src: Path, demuxer: str) -> ffmpeg.nodes.FilterableStream:
    """``src`` opened with exactly ``demuxer`` over local files only.

    Raises:
        InvalidMediaError: ``demuxer`` is not allowlisted.
    """
    return ffmpeg.input(str(src), **input_options(demuxer))


def compile_argv(graph: ffmpeg.nodes.OutputStream, *global_options: str) -> list[str]:
    """The argv of ``graph`` for the FFmpeg binary: quiet, non-interactive, overwriting its
    (temporary) output, with ``global_options`` added."""
    return graph.global_args(*QUIET_OPTIONS, *global_options).compile(
        cmd=find_ffmpeg(), overwrite_output=True)
