"""Probe, split and reassemble videos with FFmpeg and PyAV (plain functions, no Prefect).

The CPU side of the pipeline, one module per step:

* :mod:`~tasks.media.probing`: :func:`probe` validates an untrusted upload and records its
  exact frame timing (:mod:`~tasks.media.info` holds what it learns).
* :mod:`~tasks.media.audio`: :func:`extract_audio` copies every audio stream out untouched.
* :mod:`~tasks.media.chunking`: every decision about the GPU job's input chunks (pixel
  format, codec, length) and the FFmpeg command that cuts them; :mod:`~tasks.media.split`:
  :func:`split_video` cuts and checks them and writes the job's manifest.
* :mod:`~tasks.media.reassembly`: :func:`reassemble` joins the stylized H.264 chunks without
  re-encoding, restamps every frame with the source's own timestamp and muxes the audio back;
  :mod:`~tasks.media.mp4boxes` declares odd display sizes in the MP4 ('clap').
* :mod:`~tasks.media.thumbnails`: :func:`extract_frame_png` for before/after pictures.

FFmpeg itself (binary, runner, error, input allowlists) is :mod:`gpu.ffmpeg`; commands with
several inputs or a filter graph are built with ffmpeg-python (:mod:`~tasks.media.commands`).

The names below are imported on first use, so that the standard-library modules
(:mod:`~tasks.media.chunking`, :mod:`~tasks.media.split`, :mod:`~tasks.media.info`) import on
a GPU host that has neither PyAV nor ffmpeg-python.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "gpu.ffmpeg": ("FFmpegError", "InvalidMediaError"),
    "tasks.media.info": ("AudioStreamInfo", "MediaProbe", "VideoStreamInfo"),
    "tasks.media.chunking": (
        "DEFAULT_CHUNK_SECONDS", "ChunkFormat", "ChunkPlan", "InsufficientDiskError",
        "SourceVideo", "build_split_argv", "choose_chunk_codec", "choose_chunk_format",
        "chunk_starts", "frames_per_chunk", "plan_chunks", "raw_chunks_bytes",
    ),
    "tasks.media.split": ("split_video", "write_chunks"),
    "tasks.media.probing": ("open_media", "probe"),
    "tasks.media.audio": ("build_extract_audio_argv", "extract_audio"),
    "tasks.media.reassembly": ("build_mux_argv", "reassemble"),
    "tasks.media.mp4boxes": ("add_clean_aperture", "clean_aperture"),
    "tasks.media.thumbnails": ("build_frame_png_argv", "extract_frame_png"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
