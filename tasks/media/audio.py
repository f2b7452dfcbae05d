"""Copy every audio stream of an upload out, untouched, for the result to carry back."""

from __future__ import annotations

import os
from pathlib import Path

import ffmpeg

from gpu.ffmpeg import FFmpegError, run_ffmpeg
from tasks.media.commands import compile_argv, open_input
from tasks.media.info import MediaProbe


def build_extract_audio_argv(
    src: Path, demuxer: str, stream_index: int, out: Path, codec: str = "copy"
) -> list[str]:
    """Copy audio stream ``stream_index`` (absolute index) of ``src`` into ``out`` (.mka).

    FFmpeg shifts every stream by the container's start time, the same shift
    :func:`tasks.media.reassemble` applies to the video, so the two stay in sync.

    Args:
        src: Source video.
        demuxer: Allowlisted demuxer of ``src``.
        stream_index: Absolute index of the audio stream.
        out: Output Matroska file.
        codec: ``copy``, or a lossless encoder (``flac``) for codecs Matroska cannot hold.
    """
    stream = open_input(src, demuxer)[str(stream_index)]
    return compile_argv(ffmpeg.output(stream, str(out), format="matroska", c=codec,
                                      map_chapters=-1))


def extract_audio(src: Path, probe: MediaProbe, out_dir: Path) -> list[Path]:
    """Stream-copy every audio stream of ``src`` into its own Matroska file.

    A codec Matroska cannot carry (old QuickTime ADPCM, for one) is decoded to FLAC
    instead: still lossless, and :func:`tasks.media.reassemble` turns it into AAC either way.

    Returns:
        ``out_dir/audio-00.mka ...`` in the order of ``probe.audio``.

    Raises:
        FFmpegError: A stream could be neither copied nor decoded.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    outputs = []
    for n, stream in enumerate(probe.audio):
        out = out_dir / f"audio-{n:02d}.mka"
        tmp = out_dir / f".audio-{n:02d}.tmp.mka"
        try:
            try:
                run_ffmpeg(build_extract_audio_argv(src, probe.demuxer, stream.index, tmp))
            except FFmpegError:
                run_ffmpeg(
                    build_extract_audio_argv(src, probe.demuxer, stream.index, tmp, "flac")
                )
            os.replace(tmp, out)
        finally:
            tmp.unlink(missing_ok=True)
        outputs.append(out)
    return outputs

