"""Stylize every chunk of a job folder with a style network, spread over MPI ranks.

Run as::

    mpiexec -n 4 python -m gpu.stylize --input IN --output OUT [--model M] [--device auto]

or, on one process, ``python -m gpu.stylize --input IN --output OUT``. ``IN`` and ``OUT`` follow
the contract of :mod:`gpu.jobdir`.

Ranks share the work dynamically: rank 0 lists the chunks that are not done yet and broadcasts
the list, then every rank claims the next position in it from an atomic counter held in an MPI
window on rank 0, so a slow rank never holds up the rest. Each rank keeps several chunks in
flight (``--encoders``, by default one per two of its cores): every chunk has its own decoder
and encoder threads, each driving an FFmpeg process, while the rank's main thread runs the
network for all of them in turn, so the host's cores all encode while one thread feeds the
device. Each chunk's x264 may use all of the rank's threads (``--encoder-threads`` to change
that; see :func:`default_encoder_threads`) and each decoder a small fixed count
(:data:`DECODER_THREADS`). A chunk's output is
renamed into place and then its report is written, so a rerun after any failure redoes only the
chunks without a report. When every rank is through, rank 0 writes ``summary.json``.

Input chunks are lossless, raw or Ut Video, in the manifest's ``input_format``: ``yuv420p``
(limited range, in the YCbCr matrix the manifest names) for most sources, ``gbrp`` (planar RGB)
for the rest (see :mod:`tasks.split_command`). FFmpeg decodes Ut Video ones to their own
planar format on the pipe, converting and packing nothing, since decoding is the host's other
big cost beside x264; the raw planes go to the device as they are, and the conversion to RGB
(chroma upsampling and the matrix at limited range, or reordering G, B, R planes) runs there,
inside the compiled step under ``--compile``. Chunks of codec ``rawvideo`` already hold those
planes: they are read straight into the batch buffers, with no FFmpeg decoder at all (see
:func:`open_chunk_reader`).

Before it claims any chunk, each rank warms the network up on a batch of the job's shape: under
``--compile`` (``torch.compile``; by default only for long CUDA jobs) that is when compilation
happens, and on CUDA when cuDNN picks its algorithms. The summary reports the warm-up apart
from the steady-state rate, the share of the run each device spent on the rank's batches (timed
with CUDA events), and how busy the host's CPUs were over the run (from ``/proc/stat``).

Each rank drives GPU ``OMPI_COMM_WORLD_LOCAL_RANK mod device count``, so two ranks may share
a GPU; that helps when FFmpeg, not the GPU, is the limit. Launch with ``--bind-to none``: by
default mpiexec pins each rank, and the FFmpeg processes it starts, to a single core.

Stylized chunks are H.264 (``-bf 0``, the manifest's CRF and preset, x264 settings fixed so every
chunk has the same SPS and PPS) in Matroska, converted to BT.709 limited-range YUV 4:2:0 on the
device, whatever the input's matrix. Their coded size is the manifest's rounded up to even,
padded at the right and bottom, and their timestamps are a nominal 25 frames/s: the CPU side
crops and retimes. Decoding needs FFmpeg 5.1 or later (``-fps_mode``).

A rank that fails makes the whole job fail: errors in the input that every rank knows about end
every rank with status 2; anything unexpected prints its traceback and aborts ``MPI_COMM_WORLD``.

Only torch, numpy, mpi4py, safetensors and an FFmpeg binary are needed: this module never
imports Prefect or anything from ``tasks/``.
"""

from __future__ import annotations

import argparse
import collections
import functools
import json
import os
import queue
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gpu import jobdir
from gpu.jobdir import (
    YCBCR_MATRICES,
    ChunkReport,
    ChunkSpec,
    InputFormat,
    JobManifest,
    JobSummary,
    RankSummary,
)
from gpu.model import load_style_model
from gpu.video_io import (
    FrameReader,
    FrameWriter,
    RawFrameReader,
    even_size,
    find_ffmpeg,
    frame_bytes,
    yuv420_frame_bytes,
)

if TYPE_CHECKING:
    from mpi4py import MPI

FAULT_EXIT_CODE = 17
"""Exit status of a rank stopped by ``--fault-rank`` (fault injection for tests)."""

INPUT_ERROR_EXIT_CODE = 2
QUEUE_DEPTH = 2
"""Batches of one chunk waiting between its decoder, the network and its encoder: enough to
smooth out their jitter."""

COMPILE_MODES = ("none", "default", "reduce-overhead", "max-autotune",
                 "max-autotune-no-cudagraphs")
"""``--compile`` choices: no compilation, or a ``torch.compile`` mode."""

CUDA_GRAPH_MODES = frozenset({"reduce-overhead", "max-autotune"})
"""Modes that replay CUDA graphs: they record during the first calls, so warm up with three."""

CPU_BATCH_SIZE = 2
"""Frames per forward pass on the CPU. On a 2-core CPU at 640x360 the network alone ran at 4.76
frames/s with batches of 2 and 4.58 with 8 (docs/model_fps_cpu.json), and the first shipped
set's whole job 24% faster with 2 than with 8 (docs/stylize_job_cpu_demo_batch8.json): the
activations of small batches stay in cache."""

CUDA_BATCH_SIZE = 16
CUDA_BATCH_PIXELS = CUDA_BATCH_SIZE * 1920 * 1080
"""Frames per forward pass under CUDA: 16 up to 1080p, fewer for larger frames so that a batch
holds at most 16 1080p frames' pixels (each lane keeps eight batches of pinned host memory).
On one H200 with CUDA graphs and raw chunks, batches of 16 against 8, interleaved in one call,
took the job from 0.85 to 0.89 of the host's x264 rate at 1080p and from 0.85 to 0.90 at
720x720 (means of three runs against two; docs/job_variants_h200.json, call 4): half as many
launches, pipe writes and hand-offs between threads per frame. The network alone runs as fast
at 16 as at 8 (docs/model_fps_1080p_batches.json)."""


def default_batch_size(device_type: str, width: int, height: int) -> int:
    """Frames per forward pass when ``--batch-size`` is not given."""
    if device_type != "cuda":
        return CPU_BATCH_SIZE
    return max(1, min(CUDA_BATCH_SIZE, CUDA_BATCH_PIXELS // (width * height)))


CORES_PER_ENCODER = 2
"""Default chunks in flight per rank: one per this many of its cores. One x264 process cannot
keep many cores busy: its frame threads wait on one another's reference rows, and it idles
while its chunk starts and ends. Each chunk's x264 may still use all of the rank's threads
(see :func:`default_encoder_threads`). On one H200's 16-core host (2026-11-29, compiled, 16
x264 threads each) eight chunks in flight ran the job at 226 frames/s at 1080p and 651 at
720x720 against 201 and 568 with four (docs/stylize_job_encoders_{8,4}.json)."""

DECODER_THREADS = 2
"""Threads of each chunk decoder (at most the rank's threads). Decoding is cheap next to x264:
on the H200 host eight decoders of two threads each decoded 1080p Ut Video 4:2:0 chunks at
1705-1875 frames/s in all (docs/stylize_job*.json, ``host.decode_fps``), far above the host's
x264 rate (263-308 frames/s). A second thread, on which FFmpeg decodes the next frame, lets a
decoder catch up after the network drained its queue. More would only add threads competing
with the encoders for the cores: FFmpeg's default is one per core, for every decoder."""


class JobInputError(Exception):
    """The job folder, the model or an option is unusable; the message says what and where.

    Attributes:
        on_every_rank: Every rank raises this same error (rank 0 found it and broadcast it),
            so the ranks can all exit without aborting one another.
    """

    def __init__(self, message: str, on_every_rank: bool = False) -> None:
        super().__init__(message)
        self.on_every_rank = on_every_rank


class CompileError(RuntimeError):
    """``torch.compile`` failed on the warm-up batch (the job does not fall back to eager)."""


@dataclass(frozen=True)
class Placement:
    """Where this process runs: its MPI rank and the device it drives."""

    rank: int
    size: int
    host: str
    device: torch.device
    device_name: str
    threads: int


@dataclass(frozen=True)
class Plan:
    """What rank 0 broadcasts: the manifest and the chunks still to do, or why there are none."""

    manifest: JobManifest | None
    pending: list[int]
    error: str | None = None


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Stylize the chunks of a restyle job folder (run under mpiexec for many ranks)"
    )
    parser.add_argument("--input", type=Path, required=True,
                        help="job folder: job.json, model.safetensors, chunks/")
    parser.add_argument("--output", type=Path, required=True,
                        help="output folder: chunks/, done/, summary.json (finished work is kept)")
    parser.add_argument("--model", type=Path, default=None,
                        help="style network weights (default: INPUT/model.safetensors)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                        help="auto: CUDA when available, else CPU")
    parser.add_argument("--batch-size", type=int, default=0,
                        help=f"frames per forward pass (default: {CUDA_BATCH_SIZE} on CUDA "
                             f"up to 1080p, fewer for larger frames; {CPU_BATCH_SIZE} on the "
                             "CPU)")
    parser.add_argument("--compile", choices=["auto", *COMPILE_MODES], default="auto",
                        help="torch.compile mode for the network and the YUV conversion "
                             "(auto: 'reduce-overhead' on CUDA for long jobs, else 'none', see "
                             "resolve_compile_mode, and eager if that compile fails); a failed "
                             "compile of a named mode ends the job")
    parser.add_argument("--encoders", type=int, default=0,
                        help="chunks in flight per rank, each with its own FFmpeg decoder and "
                             f"encoder (default: one per {CORES_PER_ENCODER} of the rank's "
                             "threads, at least one)")
    parser.add_argument("--encoder-threads", type=int, default=0,
                        help="x264 threads of each chunk in flight (default: all of the "
                             "rank's threads)")
    parser.add_argument("--threads", type=int, default=0,
                        help="CPU threads per rank: torch's, and those its FFmpeg processes "
                             "share (default: the cores mpiexec bound the rank to, else the "
                             "node's cores over its ranks)")
    parser.add_argument("--max-waiting-batches", type=int, default=0,
                        help="start a new chunk only while at most this many batches wait for "
                             "the network (or none of the rank's chunks is in flight), so a "
                             "rank whose network is the limit keeps few chunks in flight and "
                             "the last ones spread over the ranks (default 0: start one "
                             "whenever a lane is free)")
    parser.add_argument("--ffmpeg", default=None,
                        help="FFmpeg binary (default: $RESTYLE_FFMPEG, else the imageio-ffmpeg "
                             "binary, else ffmpeg on PATH)")
    fault = parser.add_argument_group(
        "fault injection (tests only)",
        f"Rank FAULT_RANK ends with os._exit({FAULT_EXIT_CODE}) once it has finished "
        "FAULT_AFTER_CHUNKS chunks, before claiming another; no cleanup, like a crash.",
    )
    fault.add_argument("--fault-rank", type=int, default=None, help="rank that dies")
    fault.add_argument("--fault-after-chunks", type=int, default=0,
                       help="chunks that rank finishes first (default 0)")
    return parser


def _local_rank_and_size() -> tuple[int, int]:
    """This process's index among the ranks on its node, and how many ranks the node runs."""
    env = os.environ
    local_rank = env.get("OMPI_COMM_WORLD_LOCAL_RANK", env.get("LOCAL_RANK", "0"))
    local_size = env.get("OMPI_COMM_WORLD_LOCAL_SIZE", env.get("LOCAL_WORLD_SIZE", "1"))
    return int(local_rank), max(1, int(local_size))


def default_threads(local_size: int) -> int:
    """CPU threads for one rank: its share of the node's cores.

    When mpiexec binds the rank to some cores, that binding is already its share (FFmpeg
    children inherit it too); launch with ``--bind-to none`` to let every rank use all cores.
    """
    usable, total = len(os.sched_getaffinity(0)), os.cpu_count() or 1
    return usable if usable < total else max(1, total // local_size)


def default_encoders(threads: int) -> int:
    """Chunks a rank keeps in flight when ``--encoders`` is not given."""
    return max(1, threads // CORES_PER_ENCODER)


def default_encoder_threads(threads: int) -> int:
    """x264 threads of each chunk in flight when ``--encoder-threads`` is not given: all of the
    rank's threads.

    Measured on the H200's 16-core host (2026-11-29, ``bench.stylize_job``'s host rates, four
    x264 veryfast processes at once): at 1080p, 16 threads each encoded 191.5 and 198.2
    frames/s in two calls against 168.2 and 191.4 with 4 each; at 720x720 the two were within
    2% (486 against 494, 557 against 567). x264's frame threads wait on one another's rows,
    and threads to spare let a process take up the cores another leaves idle while its chunk
    starts or ends. With eight chunks in flight the compiled job ran at 212 frames/s at 1080p
    with 16 threads each and at 192 with 4 each, in two calls whose host x264 rates were
    within 8% (docs/stylize_job_compiled.json, docs/stylize_job_encoder_threads_4.json).
    """
    return max(1, threads)


def default_decoder_threads(threads: int) -> int:
    """Threads of each chunk decoder: :data:`DECODER_THREADS`, at most the rank's threads."""
    return max(1, min(DECODER_THREADS, threads))


AUTO_COMPILE_MEGAPIXEL_FRAMES = 60_000
"""Work per rank (frames times megapixels) from which ``--compile auto`` compiles with CUDA
graphs: about 29,000 frames of 1080p, 16 minutes at 30 fps. On one H200 (2026-11-29, 30 s of
1080p, Ut Video chunks) the eager job ran at 191 frames/s (docs/stylize_job.json) and with CUDA
graphs (``reduce-overhead``), the fastest mode, at 217 after a 14 s compile
(docs/stylize_job_cuda_graphs.json); compiles took 14-19 s cold. Saving 0.63 ms a 1080p frame
(0.30 ms a megapixel), a 19 s compile pays for itself after about 60,000 megapixel-frames.
Scaling that by megapixels to other frame sizes is an assumption: only 1080p was measured
both ways with the same chunks."""


def resolve_compile_mode(requested: str, device_type: str = "cpu",
                         megapixel_frames_per_rank: float = 0.0) -> str:
    """The ``torch.compile`` mode that ``--compile REQUESTED`` means ('none': eager).

    ``auto`` compiles with CUDA graphs (``reduce-overhead``) only on CUDA and only for a rank's
    share of work of at least :data:`AUTO_COMPILE_MEGAPIXEL_FRAMES`, where the compile's
    seconds are won back; eager otherwise. On the CPU compiling takes longer than it saves.

    Args:
        requested: ``auto`` or one of :data:`COMPILE_MODES`.
        device_type: ``cuda`` or ``cpu``.
        megapixel_frames_per_rank: The pending frames times their megapixels, over the ranks.
    """
    if requested != "auto":
        return requested
    if device_type == "cuda" and megapixel_frames_per_rank >= AUTO_COMPILE_MEGAPIXEL_FRAMES:
        return "reduce-overhead"
    return "none"


def place(comm: MPI.Comm, requested: str, threads: int) -> Placement:
    """Pick this rank's device: GPU ``local rank mod device count`` under CUDA, else the CPU.

    Raises:
        JobInputError: CUDA was requested but is not available.
    """
    local_rank, local_size = _local_rank_and_size()
    threads = threads or default_threads(local_size)
    torch.set_num_threads(threads)
    use_cuda = requested == "cuda" or (requested == "auto" and torch.cuda.is_available())
    if use_cuda:
        if not torch.cuda.is_available():
            raise JobInputError("--device cuda: no CUDA device is available on this node")
        index = local_rank % torch.cuda.device_count()
        torch.cuda.set_device(index)
        # Every batch has the same shape, so the fastest convolution algorithms are found once.
        torch.backends.cudnn.benchmark = True
        device, name = torch.device("cuda", index), torch.cuda.get_device_name(index)
    else:
        device, name = torch.device("cpu"), "cpu"
    return Placement(rank=comm.Get_rank(), size=comm.Get_size(), host=socket.gethostname(),
                     device=device, device_name=name, threads=threads)


def plan_job(input_dir: Path, output_dir: Path, model_path: Path) -> Plan:
    """Validate the job folder and list the chunks not done yet (run on rank 0 only)."""
    try:
        manifest = read_valid_manifest(input_dir)
        if not model_path.is_file():
            raise JobInputError(f"model file not found: {model_path}")
        pending = [c.index for c in manifest.chunks if not jobdir.is_chunk_done(output_dir, c)]
        for position in pending:
            source = input_dir / manifest.chunks[position].file
            if not source.is_file():
                raise JobInputError(f"input chunk {position} not found: {source}")
    except JobInputError as err:
        return Plan(manifest=None, pending=[], error=str(err))
    return Plan(manifest=manifest, pending=pending)


def read_valid_manifest(input_dir: Path) -> JobManifest:
    """The manifest of ``input_dir``, checked for what the job relies on.

    Raises:
        JobInputError: The folder or manifest is missing, unreadable or inconsistent.
    """
    path = input_dir / jobdir.MANIFEST_NAME
    if not input_dir.is_dir():
        raise JobInputError(f"input folder not found: {input_dir}")
    if not path.is_file():
        raise JobInputError(f"no {jobdir.MANIFEST_NAME} in {input_dir}: not a restyle job folder")
    try:
        manifest = jobdir.read_manifest(input_dir)
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise JobInputError(f"bad job manifest {path}: {type(err).__name__}: {err}") from err
    problems = []
    if manifest.width < 1 or manifest.height < 1:
        problems.append(f"frame size {manifest.width}x{manifest.height} is not positive")
    elif manifest.input_format.pix_fmt == "yuv420p" and (manifest.width % 2 or
                                                         manifest.height % 2):
        problems.append(f"yuv420p chunks need an even frame size, not "
                        f"{manifest.width}x{manifest.height}")
    if not manifest.chunks:
        problems.append("it lists no chunks")
    for position, chunk in enumerate(manifest.chunks):
        if chunk.index != position:
            problems.append(f"chunk at position {position} has index {chunk.index}")
        if chunk.frames < 1:
            problems.append(f"chunk {chunk.index} has {chunk.frames} frames")
    if problems:
        raise JobInputError(f"bad job manifest {path}: " + "; ".join(problems[:5]))
    return manifest


class WorkCounter:
    """A counter on rank 0 that every rank increments atomically to claim the next item.

    ``MPI_Fetch_and_op`` under a shared passive-target lock: no rank waits for another to
    hand out work, and each position is claimed exactly once. Within a node (shared memory)
    and over RDMA networks (UCX) the atomic completes without rank 0's help; over plain TCP
    between nodes Open MPI may only progress it when rank 0 next calls MPI, at its next claim.
    """

    def __init__(self, comm: MPI.Comm) -> None:
        from mpi4py import MPI

        itemsize = np.dtype(np.int64).itemsize
        self._win = MPI.Win.Allocate(itemsize if comm.Get_rank() == 0 else 0, itemsize,
                                     comm=comm)
        if comm.Get_rank() == 0:
            self._win.Lock(0, MPI.LOCK_EXCLUSIVE)
            self._win.Put(np.zeros(1, np.int64), 0)
            self._win.Unlock(0)
        comm.Barrier()
        self._one = np.ones(1, np.int64)
        self._fetched = np.zeros(1, np.int64)
        self._shared_lock, self._sum = MPI.LOCK_SHARED, MPI.SUM

    def claim(self) -> int:
        """The next unclaimed position (0, 1, 2, ... across all ranks together)."""
        self._win.Lock(0, self._shared_lock)
        self._win.Fetch_and_op(self._one, self._fetched, 0, 0, self._sum)
        self._win.Unlock(0)
        return int(self._fetched[0])

    def free(self) -> None:
        """Release the window (collective: every rank calls it once it stops claiming)."""
        self._win.Free()


@dataclass(frozen=True)
class FrameLayout:
    """What one decoded frame looks like in a host buffer: its size and raw pixel format."""

    width: int
    height: int
    input_format: InputFormat = field(default_factory=InputFormat)

    @classmethod
    def of(cls, manifest: JobManifest) -> FrameLayout:
        return cls(manifest.width, manifest.height, manifest.input_format)

    @property
    def pix_fmt(self) -> str:
        return self.input_format.pix_fmt

    @property
    def frame_bytes(self) -> int:
        """Bytes of one frame (one row of a decoded batch)."""
        return frame_bytes(self.pix_fmt, self.width, self.height)


def open_chunk_reader(ffmpeg: str, source: Path, layout: FrameLayout,
                      decoder_threads: int = 0) -> FrameReader | RawFrameReader:
    """A reader of ``source``'s raw frames for the chunk codec of ``layout.input_format``.

    Args:
        ffmpeg: The FFmpeg binary that decodes Ut Video chunks.
        source: The input chunk.
        layout: Its frames' size, pixel format and codec.
        decoder_threads: FFmpeg's decoder threads (0: its choice); raw chunks need none.
    """
    if layout.input_format.codec == "rawvideo":
        return RawFrameReader(source, layout.width, layout.height, layout.pix_fmt)
    return FrameReader(ffmpeg, source, layout.width, layout.height, layout.pix_fmt,
                       decoder_threads)


class Stylizer:
    """Runs the network on batches of raw decoded frames: bf16 autocast on CUDA, fp32 on the CPU.

    Under a ``torch.compile`` mode the whole step from the raw planes to YUV 4:2:0 bytes is
    compiled, so the conversions on either side fuse with the network's first and last layers.
    """

    def __init__(self, model: nn.Module, device: torch.device, layout: FrameLayout,
                 compile_mode: str = "none") -> None:
        self.device = device
        self.layout = layout
        self.cuda = device.type == "cuda"
        self.compile_mode = compile_mode
        self.model = model.to(device, memory_format=torch.channels_last) if self.cuda else model
        self._convert: Callable[[torch.Tensor], torch.Tensor] = self._step
        if compile_mode != "none":
            # One batch shape per job (a short last batch runs padded), so no dynamic shapes.
            self._convert = torch.compile(self._step, mode=compile_mode, dynamic=False)
        # Compiled code, and the algorithms cuDNN picks, hold for one shape: on CUDA or when
        # compiled a short last batch runs at full size all the same (frames are independent).
        self.full_batches = self.cuda or compile_mode != "none"
        if self.cuda:
            # Blocking events put the waiting thread to sleep: by default CUDA spins on a core
            # while the batch runs, a core the x264 encoders, the job's limit, then lack.
            self._started = torch.cuda.Event(enable_timing=True, blocking=True)
            self._finished = torch.cuda.Event(enable_timing=True, blocking=True)

    @torch.inference_mode()
    def __call__(self, frames: torch.Tensor, out: torch.Tensor, count: int) -> float:
        """Stylize the first ``count`` of ``(N, layout.frame_bytes)`` raw host frames into ``out``.

        ``out`` is ``(N, yuv420_frame_bytes(W', H'))`` uint8 planar YUV 4:2:0, ``H'`` and ``W'``
        being ``H`` and ``W`` rounded up to even; the extra row or column repeats the last one,
        so chroma at the edge is not pulled towards black. Returns once ``out`` is filled and
        ``frames`` may be reused.

        Returns:
            Seconds the device spent on the batch: on CUDA, event-timed from the upload to the
            end of the download; on the CPU, the wall time of the call.
        """
        if not self.full_batches:
            frames, out = frames[:count], out[:count]
        if not self.cuda:
            started = time.perf_counter()
            out.copy_(self._convert(frames))
            return time.perf_counter() - started
        stream = torch.cuda.current_stream(self.device)
        self._started.record(stream)
        batch = frames.to(self.device, non_blocking=True)
        if self.compile_mode in CUDA_GRAPH_MODES:
            # The graphs' output memory is reused by the next replay: the previous batch's
            # output has been copied out by now, which is what this call tells them.
            torch.compiler.cudagraph_mark_step_begin()
        out.copy_(self._convert(batch), non_blocking=True)
        self._finished.record(stream)
        self._finished.synchronize()
        return self._started.elapsed_time(self._finished) / 1000

    def _step(self, frames: torch.Tensor) -> torch.Tensor:
        """YUV 4:2:0 rows (see :func:`rgb_to_yuv420`) of stylized raw device frames."""
        # RGB comes out channels_last (NHWC in memory), the layout tensor cores want.
        x = raw_to_rgb(frames, self.layout)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.cuda):
            y = self.model(x)
        width, height = self.layout.width, self.layout.height
        even_width, even_height = even_size(width, height)
        # Round through 8-bit RGB first, as if the frames had left the device as RGB24.
        y = y.float().clamp_(0, 1).mul_(255).round_().div_(255)
        if (even_width, even_height) != (width, height):
            y = F.pad(y, (0, even_width - width, 0, even_height - height), mode="replicate")
        return rgb_to_yuv420(y)

    def warm_up(self, batch_size: int) -> float:
        """Run the first batches of the job's shape, which compile and autotune; time them.

        Returns:
            Their seconds (0 on the CPU without compilation, where there is nothing to warm).

        Raises:
            CompileError: ``torch.compile`` failed; the message says how to run without it.
        """
        if not self.full_batches:
            return 0.0
        # CUDA graphs need three calls: a plain run, the recording, a first replay.
        calls = 3 if self.compile_mode in CUDA_GRAPH_MODES and self.cuda else 1
        width, height = self.layout.width, self.layout.height
        frames = torch.zeros((batch_size, self.layout.frame_bytes), dtype=torch.uint8)
        out = torch.empty((batch_size, yuv420_frame_bytes(*even_size(width, height))),
                          dtype=torch.uint8)
        started = time.perf_counter()
        try:
            for _ in range(calls):
                self(frames, out, batch_size)
        except Exception as err:
            if self.compile_mode == "none":
                raise
            raise CompileError(
                f"torch.compile(mode={self.compile_mode!r}) failed on the warm-up batch "
                f"({batch_size}x{height}x{width} {self.layout.pix_fmt}): "
                f"{type(err).__name__}: {err}\n"
                "Rerun with --compile none to run the network uncompiled."
            ) from err
        return time.perf_counter() - started


def warm_up_or_fall_back(stylizer: Stylizer, batch_size: int, *, fall_back: bool
                         ) -> tuple[Stylizer, float, str | None]:
    """Warm ``stylizer`` up; if its compile fails and ``fall_back`` (the mode came from
    ``--compile auto``, which promises speed, not a mode), warm up an eager one instead.

    Returns:
        The stylizer to run, its warm-up seconds, and the compile error that was fallen back
        from (``None`` when there was none).

    Raises:
        CompileError: The compile failed and ``fall_back`` is false.
    """
    try:
        return stylizer, stylizer.warm_up(batch_size), None
    except CompileError as err:
        if not fall_back:
            raise
        eager = Stylizer(stylizer.model, stylizer.device, stylizer.layout)
        return eager, eager.warm_up(batch_size), str(err).splitlines()[0]


# BT.709 luma weights; Cb and Cr divide B - Y and R - Y by these to span [-0.5, 0.5].
KR, KB = YCBCR_MATRICES["bt709"]
CB_SCALE, CR_SCALE = 2 * (1 - KB), 2 * (1 - KR)


def rgb_to_yuv420(rgb: torch.Tensor) -> torch.Tensor:
    """BT.709 limited-range planar YUV 4:2:0 bytes of RGB frames, computed where ``rgb`` lives.

    Args:
        rgb: ``(N, 3, H, W)`` floats in [0, 1], ``H`` and ``W`` even.

    Returns:
        ``(N, H*W + 2*(H/2)*(W/2))`` uint8: each row is the Y plane then the U and V planes,
        the layout of FFmpeg's ``yuv420p``. Chroma sits on even columns between row pairs
        (H.264's default "left" siting): rows are averaged in pairs, columns filtered 1-2-1.
    """
    red, green, blue = rgb.unbind(1)
    luma = KR * red + (1 - KR - KB) * green + KB * blue
    chroma = torch.stack([(blue - luma) / CB_SCALE, (red - luma) / CR_SCALE], 1)
    rows = (chroma[..., 0::2, :] + chroma[..., 1::2, :]) / 2
    padded = F.pad(rows, (1, 1, 0, 0), mode="replicate")
    sited = padded[..., 0:-2:2] / 4 + padded[..., 1:-1:2] / 2 + padded[..., 2::2] / 4
    planes = [(16 + 219 * luma).flatten(1), (128 + 224 * sited).flatten(1)]
    return torch.cat(planes, 1).round_().clamp_(0, 255).to(torch.uint8)


def raw_to_rgb(frames: torch.Tensor, layout: FrameLayout) -> torch.Tensor:
    """RGB of raw decoded frames, computed where ``frames`` lives.

    Args:
        frames: ``(N, layout.frame_bytes)`` uint8 rows as FFmpeg writes ``layout.pix_fmt``.
        layout: Their size and format.

    Returns:
        ``(N, 3, H, W)`` floats in [0, 1], channels_last in memory.
    """
    if layout.pix_fmt == "yuv420p":
        matrix = layout.input_format.matrix
        assert matrix is not None  # InputFormat guarantees it
        return yuv420_to_rgb(frames, layout.width, layout.height, matrix)
    return gbrp_to_rgb(frames, layout.width, layout.height)


def gbrp_to_rgb(frames: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """``(N, 3, H, W)`` floats in [0, 1] (channels_last) of ``(N, 3*H*W)`` uint8 ``gbrp`` rows.

    FFmpeg's planar RGB stores the planes in G, B, R order.
    """
    green, blue, red = frames.reshape(len(frames), 3, height, width).unbind(1)
    return torch.stack([red, green, blue], -1).float().div_(255).permute(0, 3, 1, 2)


def yuv420_to_rgb(frames: torch.Tensor, width: int, height: int, matrix: str) -> torch.Tensor:
    """``(N, 3, H, W)`` floats in [0, 1] (channels_last) of limited-range ``yuv420p`` rows.

    The inverse of :func:`rgb_to_yuv420` for any matrix of :data:`gpu.jobdir.YCBCR_MATRICES`:
    chroma sits on even columns between row pairs (H.264's default "left" siting) and is
    interpolated linearly to every pixel (see :func:`upsample_chroma`); Y spans 16-235 and Cb
    and Cr 16-240 around 128. Values outside the RGB cube are clipped.

    Args:
        frames: ``(N, H*W + 2*(H/2)*(W/2))`` uint8: the Y plane, then the U and V planes.
        width: Frame width, even.
        height: Frame height, even.
        matrix: Key of :data:`gpu.jobdir.YCBCR_MATRICES`.
    """
    kr, kb = YCBCR_MATRICES[matrix]
    count, luma_bytes = len(frames), width * height
    x = frames.float()
    luma = (x[:, :luma_bytes].reshape(count, height, width) - 16) / 219
    chroma = (x[:, luma_bytes:].reshape(count, 2, height // 2, width // 2) - 128) / 224
    cb, cr = upsample_chroma(chroma).unbind(1)
    red = luma + 2 * (1 - kr) * cr
    blue = luma + 2 * (1 - kb) * cb
    green = (luma - kr * red - kb * blue) / (1 - kr - kb)
    return torch.stack([red, green, blue], -1).clamp_(0, 1).permute(0, 3, 1, 2)


def upsample_chroma(chroma: torch.Tensor) -> torch.Tensor:
    """4:2:0 chroma planes ``(N, C, H/2, W/2)`` interpolated to ``(N, C, H, W)``, left-sited.

    Chroma sample ``(i, j)`` sits at luma column ``2j`` and halfway between luma rows ``2i``
    and ``2i + 1`` (what :func:`rgb_to_yuv420` produces and H.264 assumes by default). Luma row
    ``2i`` is a quarter of a chroma row from sample row ``i``, so it takes 3/4 of it and 1/4 of
    row ``i - 1``; even columns take their sample, odd ones the mean of their two neighbours.
    Edges repeat the last sample.
    """
    count, planes, rows, columns = chroma.shape
    padded = F.pad(chroma, (0, 0, 1, 1), mode="replicate")
    upper = 0.75 * chroma + 0.25 * padded[..., :-2, :]
    lower = 0.75 * chroma + 0.25 * padded[..., 2:, :]
    tall = torch.stack([upper, lower], -2).reshape(count, planes, 2 * rows, columns)
    right = F.pad(tall, (0, 1, 0, 0), mode="replicate")[..., 1:]
    wide = torch.stack([tall, (tall + right) / 2], -1)
    return wide.reshape(count, planes, 2 * rows, 2 * columns)


class BufferPool:
    """Host batch buffers that cycle through the pipeline instead of being allocated per batch.

    Under CUDA they are pinned, so copies to and from the device run at full speed; pinning
    is slow, which is why the buffers are made once per rank.
    """

    def __init__(self, count: int, shape: tuple[int, ...], pinned: bool) -> None:
        self._free: queue.Queue[torch.Tensor] = queue.Queue()
        for _ in range(count):
            self._free.put(torch.empty(shape, dtype=torch.uint8, pin_memory=pinned))

    def take(self, stop: threading.Event) -> torch.Tensor | None:
        """A free buffer, waiting for one if need be; ``None`` once ``stop`` is set."""
        while not stop.is_set():
            try:
                return self._free.get(timeout=0.1)
            except queue.Empty:
                continue
        return None

    def give(self, buffer: torch.Tensor) -> None:
        self._free.put(buffer)


@dataclass(frozen=True)
class Buffers:
    """The decoded-frame and stylized-frame pools of one lane (one chunk in flight)."""

    decoded: BufferPool
    stylized: BufferPool

    @classmethod
    def for_job(cls, manifest: JobManifest, batch_size: int, pinned: bool) -> Buffers:
        # The decoder, the network and the encoder can each hold one buffer while the
        # queues between them hold the rest.
        count = QUEUE_DEPTH + 2
        even_width, even_height = even_size(manifest.width, manifest.height)
        return cls(
            decoded=BufferPool(count, (batch_size, FrameLayout.of(manifest).frame_bytes), pinned),
            stylized=BufferPool(count, (batch_size, yuv420_frame_bytes(even_width, even_height)),
                                pinned),
        )


@dataclass
class StageClock:
    """Seconds each pipeline stage spent working on one chunk."""

    decode: float = 0.0
    infer: float = 0.0
    encode: float = 0.0


_END = object()
"""Ends one chunk's stream of stylized batches; also what a pipe returns once the rank stops."""

_LANE_DONE = object()
"""A lane has no more chunks to do."""


class _Pipe:
    """A queue between a rank's threads that gives up waiting once the rank stops.

    Unbounded: the buffer pools bound what is in flight, and the thread that runs the network
    must never wait on one chunk's encoder while other chunks have batches ready.
    """

    def __init__(self, stop: threading.Event) -> None:
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._stop = stop

    def put(self, item: Any) -> None:
        self._queue.put(item)

    def waiting(self) -> int:
        """Items put and not yet taken (approximate while other threads put)."""
        return self._queue.qsize()

    def get(self) -> Any:
        while not self._stop.is_set():
            try:
                return self._queue.get(timeout=0.1)
            except queue.Empty:
                continue
        return _END


@dataclass(frozen=True)
class _Batch:
    """Decoded frames for the network, and where its output goes."""

    frames: torch.Tensor
    out: torch.Tensor
    count: int
    buffers: Buffers
    clock: StageClock
    reply: _Pipe


@dataclass(frozen=True)
class _ChunkEnd:
    """Follows a chunk's last batch, so its encoder learns the end after every batch."""

    reply: _Pipe


@dataclass(frozen=True)
class _Claim:
    """A lane asks for its next chunk, handing in the report of the one it just finished."""

    reply: _Pipe
    finished: ChunkReport | None


def _run_stage(name: str, body: Callable[[], None], stop: threading.Event,
               errors: list[BaseException]) -> threading.Thread:
    def guarded() -> None:
        try:
            body()
        except BaseException as err:  # noqa: BLE001 - re-raised by the main thread
            errors.append(err)
            stop.set()

    thread = threading.Thread(target=guarded, name=name, daemon=True)
    thread.start()
    return thread


@dataclass(frozen=True)
class JobContext:
    """What every lane of a rank shares."""

    manifest: JobManifest
    input_dir: Path
    output_dir: Path
    placement: Placement
    ffmpeg: str
    requests: _Pipe
    stop: threading.Event
    encoder_threads: int = 1
    decoder_threads: int = 1


def stylize_chunk(chunk: ChunkSpec, job: JobContext,
                  buffers: Buffers) -> tuple[int, StageClock] | None:
    """Decode, stylize and encode one chunk into its final place in ``job.output_dir``.

    Decoding runs in its own thread and the network in the rank's main thread (it receives
    batches through ``job.requests``); this thread encodes, so FFmpeg works while the network
    does.

    Returns:
        The frames written and the seconds each stage spent; None when the rank stopped (another
        lane failed) before the chunk was done.

    Raises:
        RuntimeError: The chunk did not decode to exactly the manifest's frame count.
        FFmpegError: Decoding or encoding failed.
    """
    manifest, stop = job.manifest, job.stop
    target = jobdir.output_chunk_path(job.output_dir, chunk)
    target.parent.mkdir(parents=True, exist_ok=True)
    # A rank killed mid-chunk by an earlier run may have left its partial file behind.
    for stale in target.parent.glob(f".{target.name}.*.tmp"):
        stale.unlink(missing_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    width, height = manifest.width, manifest.height
    clock = StageClock()
    errors: list[BaseException] = []
    stylized = _Pipe(stop)
    frames_read = 0

    def decode() -> None:
        nonlocal frames_read
        with open_chunk_reader(job.ffmpeg, job.input_dir / chunk.file, FrameLayout.of(manifest),
                               job.decoder_threads) as reader:
            while (frames := buffers.decoded.take(stop)) is not None:
                if (out := buffers.stylized.take(stop)) is None:
                    return
                started = time.perf_counter()
                count = reader.read_into(frames.numpy())
                clock.decode += time.perf_counter() - started
                if not count:
                    buffers.decoded.give(frames)
                    buffers.stylized.give(out)
                    break
                job.requests.put(_Batch(frames, out, count, buffers, clock, stylized))
                if count < len(frames):
                    break
            frames_read = reader.frames_read
        job.requests.put(_ChunkEnd(stylized))

    try:
        decoder = _run_stage("decode", decode, stop, errors)
        try:
            even_width, even_height = even_size(width, height)
            with FrameWriter(job.ffmpeg, partial, even_width, even_height, manifest.encode.crf,
                             manifest.encode.preset, job.encoder_threads) as writer:
                while (item := stylized.get()) is not _END:
                    out, count = item
                    started = time.perf_counter()
                    writer.write(out[:count].numpy())
                    clock.encode += time.perf_counter() - started
                    buffers.stylized.give(out)
                if not stop.is_set():
                    started = time.perf_counter()
                    writer.close()
                    clock.encode += time.perf_counter() - started
                    frames_written = writer.frames_written
        except BaseException:
            stop.set()
            raise
        finally:
            decoder.join()
        if errors:
            raise errors[0]
        if stop.is_set():
            return None  # another lane failed: its error ends the rank
        if frames_read != chunk.frames or frames_written != chunk.frames:
            raise RuntimeError(
                f"chunk {chunk.index} ({job.input_dir / chunk.file}): decoded {frames_read} "
                f"frames and encoded {frames_written}, but the manifest says {chunk.frames}"
            )
        with partial.open("rb") as fh:
            os.fsync(fh.fileno())
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return frames_written, clock


def run_lane(job: JobContext, buffers: Buffers) -> None:
    """Claim chunks and stylize them one after another until none are left (a lane thread)."""
    placement, replies = job.placement, _Pipe(job.stop)
    finished: ChunkReport | None = None
    try:
        while True:
            job.requests.put(_Claim(replies, finished))
            chunk = replies.get()
            if chunk is None or chunk is _END:
                return
            started = time.perf_counter()
            result = stylize_chunk(chunk, job, buffers)
            if result is None:
                return
            frames, clock = result
            seconds = time.perf_counter() - started
            finished = ChunkReport(index=chunk.index, rank=placement.rank, host=placement.host,
                                   frames=frames, seconds=round(seconds, 4),
                                   device=placement.device_name,
                                   decode_seconds=round(clock.decode, 4),
                                   infer_seconds=round(clock.infer, 4),
                                   encode_seconds=round(clock.encode, 4))
            jobdir.atomic_write_json(jobdir.done_path(job.output_dir, chunk), asdict(finished))
            log(placement, f"chunk {chunk.stem}: {frames} frames in {seconds:.2f} s "
                           f"({frames / seconds:.1f} fps; decode {clock.decode:.2f} s, "
                           f"infer {clock.infer:.2f} s, encode {clock.encode:.2f} s)")
    finally:
        job.requests.put(_LANE_DONE)


@dataclass
class RankWork:
    """The main thread's side of a rank: claims chunks for its lanes and runs the network.

    Only this thread calls MPI (claims included), so the job needs no more than the
    ``MPI_THREAD_FUNNELED`` thread level, whatever the MPI library provides.

    With ``max_waiting_batches`` set, a lane's claim waits while more batches than that wait
    for the network and the rank has a chunk in flight: a rank whose network is the limit then
    keeps only as many chunks in flight as keep the network busy, instead of one per lane that
    all finish together, long after another rank has run out of chunks to claim.
    """

    stylizer: Stylizer
    counter: WorkCounter
    plan: Plan
    placement: Placement
    fault_rank: int | None
    fault_after_chunks: int
    max_waiting_batches: int = 0
    reports: list[ChunkReport] = field(default_factory=list)
    infer_seconds: float = 0.0
    device_seconds: float = 0.0
    chunks_in_flight: int = 0

    def serve(self, requests: _Pipe, lanes: int) -> None:
        """Answer the lanes' requests until all of them are done, or the rank stops."""
        held: collections.deque[_Claim] = collections.deque()
        while lanes:
            # Never blocks with a claim held: a held claim waits only on queued batches.
            while held and self._may_start_chunk(requests):
                self._answer(held.popleft())
            item = requests.get()
            if item is _END:
                return
            if item is _LANE_DONE:
                lanes -= 1
            elif isinstance(item, _Claim):
                if item.finished is not None:
                    self.reports.append(item.finished)
                    self.chunks_in_flight -= 1
                if self._may_start_chunk(requests):
                    self._answer(item)
                else:
                    held.append(item)
            elif isinstance(item, _ChunkEnd):
                item.reply.put(_END)
            else:
                self._stylize(item)

    def _may_start_chunk(self, requests: _Pipe) -> bool:
        return (not self.max_waiting_batches or not self.chunks_in_flight
                or requests.waiting() <= self.max_waiting_batches)

    def _answer(self, claim: _Claim) -> None:
        chunk = self._next_chunk()
        if chunk is not None:
            self.chunks_in_flight += 1
        claim.reply.put(chunk)

    def _next_chunk(self) -> ChunkSpec | None:
        rank = self.placement.rank
        if self.fault_rank == rank and len(self.reports) >= self.fault_after_chunks:
            log(self.placement,
                f"fault injection: exiting abruptly after {len(self.reports)} chunks")
            os._exit(FAULT_EXIT_CODE)
        position = self.counter.claim()
        if position >= len(self.plan.pending):
            return None
        assert self.plan.manifest is not None
        return self.plan.manifest.chunks[self.plan.pending[position]]

    def _stylize(self, batch: _Batch) -> None:
        started = time.perf_counter()
        self.device_seconds += self.stylizer(batch.frames, batch.out, batch.count)
        seconds = time.perf_counter() - started
        batch.clock.infer += seconds
        self.infer_seconds += seconds
        batch.buffers.decoded.give(batch.frames)
        batch.reply.put((batch.out, batch.count))


_log_lock = threading.Lock()


def log(placement: Placement | None, message: str) -> None:
    prefix = f"[rank {placement.rank}/{placement.size}] " if placement else ""
    with _log_lock:  # lanes log from their own threads: one write per line keeps lines whole
        sys.stdout.write(prefix + message + "\n")
        sys.stdout.flush()


def run(args: argparse.Namespace, comm: MPI.Comm) -> None:
    """Stylize the pending chunks of ``args.input`` into ``args.output`` on this rank.

    Raises:
        JobInputError: The job folder, the model or an option is unusable.
        CompileError: ``torch.compile`` failed.
    """
    started = time.perf_counter()
    rank = comm.Get_rank()
    input_dir, output_dir = args.input, args.output
    model_path = args.model or input_dir / jobdir.MODEL_NAME
    if args.batch_size < 0:
        raise JobInputError(f"--batch-size must be at least 1 (or 0 for the default), got "
                            f"{args.batch_size}", on_every_rank=True)
    if args.encoders < 0:
        raise JobInputError(f"--encoders must be at least 1 (or 0 for the default), got "
                            f"{args.encoders}", on_every_rank=True)
    if args.max_waiting_batches < 0:
        raise JobInputError(f"--max-waiting-batches must be at least 0, got "
                            f"{args.max_waiting_batches}", on_every_rank=True)
    if args.encoder_threads < 0:
        raise JobInputError(f"--encoder-threads must be at least 1 (or 0 for the default), got "
                            f"{args.encoder_threads}", on_every_rank=True)
    plan = plan_job(input_dir, output_dir, model_path) if rank == 0 else None
    plan = comm.bcast(plan, root=0)
    if plan.error is not None:
        raise JobInputError(plan.error, on_every_rank=True)
    manifest = plan.manifest
    assert manifest is not None
    try:
        ffmpeg = find_ffmpeg(args.ffmpeg)
    except FileNotFoundError as err:
        raise JobInputError(str(err)) from err
    placement = place(comm, args.device, args.threads)
    try:
        model = load_style_model(model_path)
    except Exception as err:
        raise JobInputError(f"cannot load model {model_path}: {err}") from err
    pending_frames = sum(manifest.chunks[index].frames for index in plan.pending)
    compile_mode = resolve_compile_mode(
        args.compile, placement.device.type,
        pending_frames * manifest.width * manifest.height / 1e6 / placement.size)
    stylizer = Stylizer(model, placement.device, FrameLayout.of(manifest), compile_mode)
    batch_size = args.batch_size or default_batch_size(placement.device.type, manifest.width,
                                                       manifest.height)
    encoders = args.encoders or default_encoders(placement.threads)
    encoder_threads = (args.encoder_threads
                       or default_encoder_threads(placement.threads))
    decoder_threads = default_decoder_threads(placement.threads)
    lane_buffers = [Buffers.for_job(manifest, batch_size, pinned=stylizer.cuda)
                    for _ in range(encoders)]
    if rank == 0:
        matrix = manifest.input_format.matrix
        log(placement, f"{len(plan.pending)} of {len(manifest.chunks)} chunks to do, "
                       f"{manifest.width}x{manifest.height} {manifest.input_format.pix_fmt}"
                       f"{f' ({matrix})' if matrix else ''} {manifest.input_format.codec}, "
                       f"{placement.size} ranks")
    log(placement, f"on {placement.host} {placement.device} ({placement.device_name}), "
                   f"{placement.threads} threads, {encoders} chunks in flight with "
                   f"{encoder_threads} x264 and {decoder_threads} decoder threads each, "
                   f"batches of {batch_size}, compile {compile_mode}"
                   + (f", a new chunk only while at most {args.max_waiting_batches} batches "
                      f"wait" if args.max_waiting_batches else ""))

    counter = WorkCounter(comm)
    stylizer, warmup_seconds, compile_error = warm_up_or_fall_back(
        stylizer, batch_size, fall_back=args.compile == "auto")
    if compile_error:
        log(placement, f"{compile_error}; --compile auto goes on uncompiled")
        compile_mode = stylizer.compile_mode
    if warmup_seconds:
        log(placement, f"warm-up, compile {compile_mode}: {warmup_seconds:.1f} s")
    comm.Barrier()  # every rank starts claiming at once: the steady-state window is common
    run_started = time.perf_counter()
    cpu_ticks_at_start = read_cpu_ticks()
    work = RankWork(stylizer=stylizer, counter=counter, plan=plan, placement=placement,
                    fault_rank=args.fault_rank, fault_after_chunks=args.fault_after_chunks,
                    max_waiting_batches=args.max_waiting_batches)
    stop = threading.Event()
    errors: list[BaseException] = []
    job = JobContext(manifest=manifest, input_dir=input_dir, output_dir=output_dir,
                     placement=placement, ffmpeg=ffmpeg, requests=_Pipe(stop), stop=stop,
                     encoder_threads=encoder_threads, decoder_threads=decoder_threads)
    lanes = [_run_stage(f"lane {n}", functools.partial(run_lane, job, buffers), stop, errors)
             for n, buffers in enumerate(lane_buffers)]
    try:
        work.serve(job.requests, len(lanes))
    except BaseException:
        stop.set()
        raise
    finally:
        for lane in lanes:
            lane.join()
    if errors:
        raise errors[0]
    run_seconds = time.perf_counter() - run_started
    host_cpu_busy = host_cpu_busy_fraction(cpu_ticks_at_start, read_cpu_ticks())
    counter.free()

    reports = work.reports
    mine = RankSummary(
        rank=rank, host=placement.host, device=placement.device_name,
        chunks=len(reports), frames=sum(r.frames for r in reports),
        device_id=str(placement.device), threads=placement.threads, encoders=encoders,
        encoder_threads=encoder_threads, decoder_threads=decoder_threads, batch_size=batch_size,
        compile=compile_mode, warmup_seconds=round(warmup_seconds, 3),
        run_seconds=round(run_seconds, 3),
        decode_seconds=round(sum(r.decode_seconds for r in reports), 3),
        infer_seconds=round(work.infer_seconds, 3),
        encode_seconds=round(sum(r.encode_seconds for r in reports), 3),
        device_seconds=round(work.device_seconds, 3),
        device_busy_fraction=round(work.device_seconds / run_seconds, 4),
        host_cpu_busy_fraction=None if host_cpu_busy is None else round(host_cpu_busy, 4),
    )
    host_cpu = "unknown" if host_cpu_busy is None else f"{host_cpu_busy:.0%}"
    log(placement, f"run: {mine.chunks} chunks, {mine.frames} frames in {run_seconds:.2f} s, "
                   f"device busy {mine.device_busy_fraction:.0%}, host CPU busy {host_cpu}")
    everyone = comm.gather(mine, root=0)  # returns on rank 0 once every rank has finished
    if rank == 0:
        assert everyone is not None
        now = time.perf_counter()
        write_summary(output_dir, manifest, plan, everyone, placement,
                      wall_seconds=now - started, run_seconds=now - run_started)
    comm.Barrier()


def device_busy_fraction(ranks: list[RankSummary], run_seconds: float) -> float:
    """Mean over the devices the job used of the share of ``run_seconds`` each was busy.

    Ranks sharing a GPU add up. They are time-sliced, so one rank's event-timed batches can
    include time the GPU spent on another's: the figure is an upper bound when ranks share.
    Each CPU rank counts as a device of its own (its share of the cores).
    """
    busy: dict[tuple[str, str], float] = {}
    for r in ranks:
        key = (r.host, r.device_id if r.device_id.startswith("cuda") else f"cpu rank {r.rank}")
        busy[key] = busy.get(key, 0.0) + r.device_seconds
    if not busy or run_seconds <= 0:
        return 0.0
    return sum(busy.values()) / len(busy) / run_seconds


PROC_STAT = Path("/proc/stat")


@dataclass(frozen=True)
class CpuTicks:
    """Clock ticks all of the machine's CPUs together have spent busy and idle since boot."""

    busy: int
    idle: int


def read_cpu_ticks(source: Path | str = PROC_STAT) -> CpuTicks | None:
    """The ticks of the aggregate ``cpu`` line of ``/proc/stat``.

    Busy is user, nice, system, irq, softirq and steal; idle is idle and iowait. The guest
    columns are left out: the kernel already counts guest time in user and nice.

    Args:
        source: The file to read, or its text (so tests need no real ``/proc``).

    Returns:
        The ticks; None when the file cannot be read or has no such line (not Linux).
    """
    try:
        text = source.read_text() if isinstance(source, Path) else source
        line = next(line for line in text.splitlines() if line.startswith("cpu "))
        user, nice, system, idle, iowait, irq, softirq, steal = map(int, line.split()[1:9])
    except (OSError, StopIteration, ValueError):
        return None
    return CpuTicks(busy=user + nice + system + irq + softirq + steal, idle=idle + iowait)


def host_cpu_busy_fraction(start: CpuTicks | None, end: CpuTicks | None) -> float | None:
    """The share of the machine's CPU time between two :func:`read_cpu_ticks` snapshots that
    was busy.

    Every process on the node counts, not only this rank's: that is what tells whether the
    node's cores (x264 above all) were the limit, or sat idle while the pipeline waited.

    Returns:
        A fraction in [0, 1] of all the CPUs together; None when a snapshot is missing or no
        tick elapsed between them.
    """
    if start is None or end is None:
        return None
    busy, idle = end.busy - start.busy, end.idle - start.idle
    if busy + idle <= 0:
        return None
    # iowait can go backwards on multi-core kernels (proc(5)), so the share may stray past 1.
    return min(1.0, max(0.0, busy / (busy + idle)))


def write_summary(output_dir: Path, manifest: JobManifest, plan: Plan, ranks: list[RankSummary],
                  placement: Placement, wall_seconds: float, run_seconds: float) -> None:
    """Check that every chunk is done, then write ``summary.json`` (rank 0 only)."""
    missing = [c.stem for c in manifest.chunks if not jobdir.is_chunk_done(output_dir, c)]
    if missing:
        raise RuntimeError(f"every rank finished but chunks {', '.join(missing[:10])} "
                           "have no output: the work counter lost them")
    frames = sum(r.frames for r in ranks)
    summary = JobSummary(
        total_frames=sum(r.frames for r in jobdir.read_reports(output_dir)),
        chunks=len(manifest.chunks),
        chunks_skipped=len(manifest.chunks) - len(plan.pending),
        frames_processed=frames,
        wall_seconds=round(wall_seconds, 3),
        fps=round(frames / wall_seconds, 2) if wall_seconds > 0 else 0.0,
        device=placement.device_name,
        ranks=ranks,
        compile=ranks[0].compile,
        warmup_seconds=max(r.warmup_seconds for r in ranks),
        run_seconds=round(run_seconds, 3),
        steady_fps=round(frames / run_seconds, 2) if run_seconds > 0 else 0.0,
        device_busy_fraction=round(device_busy_fraction(ranks, run_seconds), 4),
        input_pix_fmt=manifest.input_format.pix_fmt,
        input_matrix=manifest.input_format.matrix,
    )
    if summary.total_frames != manifest.total_frames:
        raise RuntimeError(f"chunk reports add up to {summary.total_frames} frames, "
                           f"the manifest to {manifest.total_frames}")
    jobdir.atomic_write_json(output_dir / jobdir.SUMMARY_NAME, asdict(summary))
    log(placement, f"done: {frames} frames in {wall_seconds:.1f} s ({summary.fps} fps; "
                   f"{summary.steady_fps} fps after a {summary.warmup_seconds:.1f} s warm-up, "
                   f"device busy {summary.device_busy_fraction:.0%}); summary "
                   + json.dumps([asdict(r) for r in ranks]))


def main(args: argparse.Namespace) -> None:
    """Run the job on this rank; any failure ends the whole job with a non-zero status."""
    # Imported here, not at the top: importing mpi4py.MPI initialises MPI, which tests and
    # tools that only import this module must not do.
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    try:
        run(args, comm)
    except JobInputError as err:
        if not err.on_every_rank or comm.Get_rank() == 0:
            print(f"gpu.stylize: error: {err}", file=sys.stderr, flush=True)
        if comm.Get_size() > 1 and not err.on_every_rank:
            comm.Abort(INPUT_ERROR_EXIT_CODE)  # the other ranks may be waiting for this one
        sys.exit(INPUT_ERROR_EXIT_CODE)
    except BaseException:
        print(f"gpu.stylize: rank {comm.Get_rank()} failed:", file=sys.stderr, flush=True)
        traceback.print_exc()
        sys.stderr.flush()
        if comm.Get_size() > 1:
            comm.Abort(1)  # the other ranks may be waiting for this one: end them all
        sys.exit(1)


if __name__ == "__main__":
    main(get_args_parser().parse_args())
