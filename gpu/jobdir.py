"""The folder contract between the CPU side and the GPU job.

The GPU job reads one input folder and writes one output folder. Locally both are plain
directories; on Azure ML they are ``uri_folder`` mounts. Nothing else passes between the two
sides, so the job is identical under every compute backend.

Input folder::

    job.json                 JobManifest below
    model.safetensors        the style network's weights
    chunks/00000.mkv ...     frame-exact pieces of the source video in the manifest's
                             ``input_format``: YUV 4:2:0 or planar RGB, lossless Ut Video in
                             Matroska, or (codec ``rawvideo``) ``chunks/00000.yuv ...``, the raw
                             planes of every frame back to back

Output folder::

    chunks/00000.mkv ...     stylized chunks, same frame count as the input chunk
    done/00000.json          ChunkReport, written after the chunk: its presence marks the chunk done
    summary.json             JobSummary, written by rank 0 when every chunk is done

Every file is written under a temporary name in the same folder and renamed into place, so a
reader never sees a partial file under a final name, and a rerun skips finished chunks.

This module must stay importable with the standard library alone: the GPU job never imports
Prefect, and the CPU side imports this file to read and write the same contract.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

MANIFEST_NAME = "job.json"
MODEL_NAME = "model.safetensors"
CHUNKS_DIR = "chunks"
DONE_DIR = "done"
SUMMARY_NAME = "summary.json"
MANIFEST_VERSION = 3
"""Version 2 added ``input_format`` (chunks are no longer always planar RGB); version 3 made
``input_format.codec`` required, since chunks may now also be raw planes."""

READABLE_MANIFEST_VERSIONS = (2, MANIFEST_VERSION)
"""Versions this job reads. A version 2 manifest without ``input_format.codec`` was written
before raw chunks existed, so its chunks are Ut Video; one with it is read like version 3."""

CHUNK_CODECS = {"utvideo": ".mkv", "rawvideo": ".yuv"}
"""Codecs of input chunks, and the suffix of their files. ``utvideo``: lossless Ut Video in
Matroska, which the GPU job decodes with FFmpeg; ``rawvideo``: no container and no header, just
each frame's planes back to back, which the job reads straight into its buffers (no decoder
process, no pipe) at the price of several times the bytes on disk and in transfer."""

CHUNK_PIX_FMTS = ("yuv420p", "gbrp")
"""FFmpeg pixel formats of input chunks. ``yuv420p``: limited-range YCbCr 4:2:0 in the
manifest's matrix, chroma sited as H.264 places it by default (on even columns, between row
pairs); ``gbrp``: planar RGB, planes in G, B, R order."""

YCBCR_MATRICES: dict[str, tuple[float, float]] = {
    "bt709": (0.2126, 0.0722),
    "bt601": (0.299, 0.114),
    "bt2020nc": (0.2627, 0.0593),
    "fcc": (0.30, 0.11),
    "smpte240m": (0.212, 0.087),
}
"""The YCbCr matrices a ``yuv420p`` chunk may use, as their luma weights ``(Kr, Kb)``
(ITU-R BT.709, BT.601 (= SMPTE 170M = BT.470 BG), BT.2020 non-constant luminance, FCC 73.682,
SMPTE 240M). Names are FFmpeg's, but for bt601, which stands for both of its tags."""


@dataclass(frozen=True)
class ChunkSpec:
    """One input chunk: ``frames`` frames starting at source frame ``first_frame``."""

    index: int
    file: str
    frames: int
    first_frame: int

    @property
    def stem(self) -> str:
        return f"{self.index:05d}"


@dataclass(frozen=True)
class EncodeSettings:
    """How the GPU job encodes stylized chunks (H.264, no B-frames so packets stay in order)."""

    # The fastest setting within 0.5 VMAF of veryfast CRF 18 at under 10% more bits
    # (docs/encode_quality.md).
    crf: int = 17
    preset: str = "superfast"


@dataclass(frozen=True)
class InputFormat:
    """How the input chunks store their pixels (decoded as is, converted to RGB on the device).

    Attributes:
        pix_fmt: One of :data:`CHUNK_PIX_FMTS`.
        matrix: For ``yuv420p``, the YCbCr matrix, a key of :data:`YCBCR_MATRICES`; None for
            ``gbrp``.
        codec: How the chunk files store the frames, a key of :data:`CHUNK_CODECS` (required
            from manifest version 3 on).

    Raises:
        ValueError: The pixel format, matrix or codec is unknown, or they do not go together.
    """

    pix_fmt: str = "gbrp"
    matrix: str | None = None
    codec: str = "utvideo"

    def __post_init__(self) -> None:
        if self.codec not in CHUNK_CODECS:
            raise ValueError(f"job manifest: input_format.codec {self.codec!r} is not one of "
                             f"{', '.join(CHUNK_CODECS)}")
        if self.pix_fmt not in CHUNK_PIX_FMTS:
            raise ValueError(f"job manifest: input_format.pix_fmt {self.pix_fmt!r} is not one "
                             f"of {', '.join(CHUNK_PIX_FMTS)}")
        if self.pix_fmt == "yuv420p" and self.matrix not in YCBCR_MATRICES:
            raise ValueError(f"job manifest: input_format.matrix {self.matrix!r} is not one of "
                             f"{', '.join(YCBCR_MATRICES)}, which yuv420p chunks need")
        if self.pix_fmt == "gbrp" and self.matrix is not None:
            raise ValueError(f"job manifest: input_format.matrix must be null for gbrp chunks, "
                             f"got {self.matrix!r}")


@dataclass(frozen=True)
class JobManifest:
    """Everything the GPU job needs to know about its input folder.

    Attributes:
        width: Frame width of the chunks, in pixels (display orientation, may be odd).
        height: Frame height of the chunks, in pixels (may be odd).
        total_frames: Sum of all chunks' frames; equals the source's decoded frame count.
        chunks: The chunks in presentation order.
        encode: Encoder settings for the stylized chunks.
        input_format: Pixel format (and YCbCr matrix) and codec of the input chunks.
    """

    width: int
    height: int
    total_frames: int
    chunks: list[ChunkSpec]
    encode: EncodeSettings = field(default_factory=EncodeSettings)
    input_format: InputFormat = field(default_factory=InputFormat)
    version: int = MANIFEST_VERSION

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> JobManifest:
        """The manifest in ``data``, as :meth:`to_json` writes it (or an older readable version,
        read as the current one).

        Raises:
            ValueError: A version not in :data:`READABLE_MANIFEST_VERSIONS`, or values that do
                not fit (the message says which).
            KeyError: A required key is missing.
            TypeError: An object has keys its dataclass does not know.
        """
        version = data.get("version")
        if version not in READABLE_MANIFEST_VERSIONS:
            readable = " and ".join(map(str, READABLE_MANIFEST_VERSIONS))
            raise ValueError(f"unsupported job manifest version {version!r} "
                             f"(this job reads versions {readable})")
        chunks = [ChunkSpec(**c) for c in data["chunks"]]
        if sum(c.frames for c in chunks) != data["total_frames"]:
            raise ValueError("job manifest: chunk frame counts do not add up to total_frames")
        stored_format = data["input_format"]
        if not isinstance(stored_format, dict):
            raise ValueError(f"job manifest: input_format must be an object, got "
                             f"{stored_format!r}")
        input_format = InputFormat(**stored_format)
        if version >= 3 and "codec" not in stored_format:
            raise ValueError(f"job manifest: version {version} needs input_format.codec")
        return cls(
            width=data["width"],
            height=data["height"],
            total_frames=data["total_frames"],
            chunks=chunks,
            encode=EncodeSettings(**data.get("encode", {})),
            input_format=input_format,
        )


@dataclass(frozen=True)
class ChunkReport:
    """What one rank reports for one finished chunk."""

    index: int
    rank: int
    host: str
    frames: int
    seconds: float
    device: str
    decode_seconds: float = 0.0
    infer_seconds: float = 0.0
    encode_seconds: float = 0.0


@dataclass(frozen=True)
class RankSummary:
    """What one rank did during one run of the job (chunks finished by earlier runs excluded).

    The fields after ``frames`` were added later; summaries written before them read back with
    their defaults.

    Attributes:
        device_id: ``cuda:N`` or ``cpu``.
        threads: CPU threads of the rank (its share of the host's cores): torch's, and those
            its FFmpeg processes share.
        encoders: Chunks it kept in flight, each with its own FFmpeg decoder and encoder.
        encoder_threads: Threads of each of its x264 encoders.
        decoder_threads: Threads of each of its chunk decoders.
        batch_size: Frames per forward pass.
        compile: The ``torch.compile`` mode of its network, ``none`` for eager.
        warmup_seconds: Its first batches, before it claimed any chunk: compilation and cuDNN
            autotuning happen here, so they are not counted in ``run_seconds``.
        run_seconds: From the end of the warm-up to its last chunk's report.
        decode_seconds: Its decoders' time summed over chunks (with several chunks in flight
            such sums can exceed ``run_seconds``).
        infer_seconds: Wall time of its network calls, uploads and downloads included.
        encode_seconds: Its encoders' time summed over chunks.
        device_seconds: Time its device spent on its batches: CUDA-event-timed on a GPU, the
            network calls' wall time on the CPU.
        device_busy_fraction: ``device_seconds / run_seconds``.
        host_cpu_busy_fraction: The share of all the host's CPU time that was busy over its
            run (every process's, not only its own: ranks on one host see the same figure);
            None where ``/proc/stat`` is unreadable.
        host_cores: The host's CPUs, which the core shares of :class:`JobSummary` divide by.
        decode_cpu_seconds: CPU time of its decoding over its run: its decode threads and
            their FFmpeg decoders. None where a decoder's time could not be read.
        infer_cpu_seconds: CPU time of the rest of its own process: the network on the CPU,
            or feeding the GPU, and MPI.
        encode_cpu_seconds: CPU time of its encoding: its lane threads and their x264
            encoders. None where the decoders' time could not be told apart from it.
    """

    rank: int
    host: str
    device: str
    chunks: int
    frames: int
    device_id: str = ""
    threads: int = 0
    encoders: int = 0
    encoder_threads: int = 0
    decoder_threads: int = 0
    batch_size: int = 0
    compile: str = "none"
    warmup_seconds: float = 0.0
    run_seconds: float = 0.0
    decode_seconds: float = 0.0
    infer_seconds: float = 0.0
    encode_seconds: float = 0.0
    device_seconds: float = 0.0
    device_busy_fraction: float = 0.0
    host_cpu_busy_fraction: float | None = None
    host_cores: int = 0
    decode_cpu_seconds: float | None = None
    infer_cpu_seconds: float | None = None
    encode_cpu_seconds: float | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RankSummary:
        return cls(**_known_fields(cls, data))


@dataclass(frozen=True)
class JobSummary:
    """What rank 0 reports once every chunk is done.

    Attributes:
        total_frames: Frames in all output chunks (equals the manifest's ``total_frames``).
        chunks: Chunks in the job.
        chunks_skipped: Chunks already done by an earlier run, so not processed by this one.
        frames_processed: Frames this run stylized.
        wall_seconds: From start-up to the final barrier, on rank 0.
        fps: ``frames_processed / wall_seconds``.
        device: The device name rank 0 ran on.
        ranks: One entry per rank, in rank order.
        compile: The ``torch.compile`` mode, ``none`` for eager.
        warmup_seconds: The slowest rank's warm-up (compilation, autotuning), part of
            ``wall_seconds`` but not of ``run_seconds``.
        run_seconds: From the ranks' common start after warm-up until the last one finished.
        steady_fps: ``frames_processed / run_seconds``.
        device_busy_fraction: Mean over the devices used of the share of ``run_seconds`` each
            spent on the job's batches (see :attr:`RankSummary.device_seconds`).
        input_pix_fmt: The input chunks' pixel format (:attr:`InputFormat.pix_fmt`).
        input_matrix: Their YCbCr matrix (:attr:`InputFormat.matrix`), None for RGB chunks.
        encoder: The FFmpeg encoder of the stylized chunks (``libx264``).
        encoder_preset: Its preset (:attr:`EncodeSettings.preset`).
        encoder_crf: Its constant rate factor (:attr:`EncodeSettings.crf`).
        encoder_threads: Threads of each encoder (rank 0's; see :class:`RankSummary`).
        host_cpu_busy_fraction: Mean over the hosts of the share of their CPU time that was
            busy over the run, every process's; None where ``/proc/stat`` is unreadable.
        decode_core_share: The share of the hosts' cores (all of them, over ``run_seconds``)
            that decoding kept busy; None where it could not be told apart from encoding.
        infer_core_share: The same for the network's stage (on CUDA, feeding the GPU).
        encode_core_share: The same for encoding (x264 and the threads feeding it).
        strength: The style strength the network painted with, from 0 (near the input) to 1.
        stroke_scale: The brush size; the network painted at ``working_width`` x
            ``working_height`` and the frames were resized to and from that on the device.
        preserve_colors: Whether the output kept the source's chroma.
        working_width: Width the network painted at.
        working_height: Height the network painted at.
        mpi_library_version: The first line of the MPI library's version string.
        mpi4py_version: The mpi4py the job ran with (built against that library or not).
    """

    total_frames: int
    chunks: int
    chunks_skipped: int
    frames_processed: int
    wall_seconds: float
    fps: float
    device: str
    ranks: list[RankSummary]
    compile: str = "none"
    warmup_seconds: float = 0.0
    run_seconds: float = 0.0
    steady_fps: float = 0.0
    device_busy_fraction: float = 0.0
    input_pix_fmt: str = ""
    input_matrix: str | None = None
    encoder: str = ""
    encoder_preset: str = ""
    encoder_crf: int | None = None
    encoder_threads: int = 0
    host_cpu_busy_fraction: float | None = None
    decode_core_share: float | None = None
    infer_core_share: float | None = None
    encode_core_share: float | None = None
    strength: float | None = None
    stroke_scale: float | None = None
    preserve_colors: bool = False
    working_width: int = 0
    working_height: int = 0
    mpi_library_version: str = ""
    mpi4py_version: str = ""

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> JobSummary:
        ranks = [RankSummary.from_json(r) for r in data["ranks"]]
        return cls(**{**_known_fields(cls, data), "ranks": ranks})


def _known_fields(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """``data`` without keys ``cls`` does not know, so an older reader accepts newer files."""
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in data.items() if k in names}


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see either nothing or the whole file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes 0600; results are meant to be read by others
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, data: Any) -> None:
    """JSON flavour of :func:`atomic_write_bytes`."""
    atomic_write_bytes(path, json.dumps(data, indent=2, sort_keys=True).encode())


def read_manifest(input_dir: Path) -> JobManifest:
    return JobManifest.from_json(json.loads((input_dir / MANIFEST_NAME).read_text()))


def write_manifest(input_dir: Path, manifest: JobManifest) -> None:
    atomic_write_json(input_dir / MANIFEST_NAME, manifest.to_json())


def output_chunk_path(output_dir: Path, chunk: ChunkSpec) -> Path:
    return output_dir / CHUNKS_DIR / f"{chunk.stem}.mkv"


def done_path(output_dir: Path, chunk: ChunkSpec) -> Path:
    return output_dir / DONE_DIR / f"{chunk.stem}.json"


def is_chunk_done(output_dir: Path, chunk: ChunkSpec) -> bool:
    """A chunk is done when its report exists; the report is written after the chunk itself."""
    return done_path(output_dir, chunk).exists() and output_chunk_path(output_dir, chunk).exists()


def read_reports(output_dir: Path) -> list[ChunkReport]:
    """All chunk reports written so far, in chunk order (used for progress and per-rank counts)."""
    reports = []
    for path in sorted((output_dir / DONE_DIR).glob("[0-9]*.json")):
        reports.append(ChunkReport(**json.loads(path.read_text())))
    return reports


def read_summary(output_dir: Path) -> JobSummary:
    return JobSummary.from_json(json.loads((output_dir / SUMMARY_NAME).read_text()))
