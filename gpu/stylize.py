"""Stylize every chunk of a job folder with a style network, spread over MPI ranks.

Run as::

    mpiexec -n 4 python -m gpu.stylize --input IN --output OUT [--model M] [--device auto]

or, on one process, ``python -m gpu.stylize --input IN --output OUT``. ``IN`` and ``OUT`` follow
the contract of :mod:`gpu.jobdir`.

Ranks share the work dynamically: rank 0 lists the chunks that are not done yet and broadcasts
the list, then every rank claims the next position in it from an atomic counter held in an MPI
window on rank 0, so a slow rank never holds up the rest. Each chunk is decoded, stylized and
encoded as a pipeline of three threads; its output is renamed into place and then its report is
written, so a rerun after any failure redoes only the chunks without a report. When every rank
is through, rank 0 writes ``summary.json``.

Each rank drives GPU ``OMPI_COMM_WORLD_LOCAL_RANK mod device count``, so two ranks may share
a GPU; that helps when FFmpeg, not the GPU, is the limit (on one H200 with 16 cores, 1080p:
about 100 frames/s with one rank, 133 with two). Launch with ``--bind-to none``: by default
mpiexec pins each rank, and the FFmpeg processes it starts, to a single core.

Stylized chunks are H.264 (``-bf 0``, the manifest's CRF and preset, x264 settings fixed so every
chunk has the same SPS and PPS) in Matroska, converted to BT.709 limited-range YUV 4:2:0 on the
device. Their coded size is the manifest's rounded up to even, padded at the right and bottom,
and their timestamps are a nominal 25 frames/s: the CPU side crops and retimes. Decoding needs
FFmpeg 5.1 or later (``-fps_mode``).

A rank that fails makes the whole job fail: errors in the input that every rank knows about end
every rank with status 2; anything unexpected prints its traceback and aborts ``MPI_COMM_WORLD``.

Only torch, numpy, mpi4py, safetensors and an FFmpeg binary are needed: this module never
imports Prefect or anything from ``tasks/``.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gpu import jobdir
from gpu.jobdir import ChunkReport, ChunkSpec, JobManifest, JobSummary, RankSummary
from gpu.model import load_style_model
from gpu.video_io import FrameReader, FrameWriter, even_size, find_ffmpeg, yuv420_frame_bytes

if TYPE_CHECKING:
    from mpi4py import MPI

FAULT_EXIT_CODE = 17
"""Exit status of a rank stopped by ``--fault-rank`` (fault injection for tests)."""

INPUT_ERROR_EXIT_CODE = 2
QUEUE_DEPTH = 2
"""Batches waiting between decoder, model and encoder: enough to smooth out their jitter."""


class JobInputError(Exception):
    """The job folder, the model or an option is unusable; the message says what and where.

    Attributes:
        on_every_rank: Every rank raises this same error (rank 0 found it and broadcast it),
            so the ranks can all exit without aborting one another.
    """

    def __init__(self, message: str, on_every_rank: bool = False) -> None:
        super().__init__(message)
        self.on_every_rank = on_every_rank


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
    parser.add_argument("--batch-size", type=int, default=8, help="frames per forward pass")
    parser.add_argument("--threads", type=int, default=0,
                        help="CPU threads per rank for torch and FFmpeg (default: the cores "
                             "mpiexec bound the rank to, else the node's cores over its ranks)")
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


class Stylizer:
    """Runs the network on uint8 frame batches: bf16 autocast on CUDA, fp32 on the CPU."""

    def __init__(self, model: nn.Module, device: torch.device) -> None:
        self.device = device
        self.cuda = device.type == "cuda"
        self.model = model.to(device, memory_format=torch.channels_last) if self.cuda else model

    @torch.inference_mode()
    def __call__(self, frames: torch.Tensor, out: torch.Tensor, count: int) -> None:
        """Stylize the first ``count`` of ``(N, H, W, 3)`` uint8 host RGB frames into ``out``.

        ``out`` is ``(N, yuv420_frame_bytes(W', H'))`` uint8 planar YUV 4:2:0, ``H'`` and ``W'``
        being ``H`` and ``W`` rounded up to even; the extra row or column repeats the last one,
        so chroma at the edge is not pulled towards black. Returns once ``out`` is filled and
        ``frames`` may be reused.
        """
        if not self.cuda:
            frames, out = frames[:count], out[:count]
        # On CUDA a short last batch runs at full size all the same (frames are independent):
        # one shape means cuDNN tunes its algorithms once, not once per leftover count.
        batch = frames.to(self.device, non_blocking=True)
        # NHWC bytes seen as NCHW are already channels_last, the layout tensor cores want.
        x = batch.permute(0, 3, 1, 2).float().div_(255)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.cuda):
            y = self.model(x)
        height, width = frames.shape[1:3]
        even_width, even_height = even_size(width, height)
        # Round through 8-bit RGB first, as if the frames had left the device as RGB24.
        y = y.float().clamp_(0, 1).mul_(255).round_().div_(255)
        if (even_width, even_height) != (width, height):
            y = F.pad(y, (0, even_width - width, 0, even_height - height), mode="replicate")
        out.copy_(rgb_to_yuv420(y), non_blocking=True)
        if self.cuda:
            torch.cuda.current_stream(self.device).synchronize()


# BT.709 luma weights; Cb and Cr divide B - Y and R - Y by these to span [-0.5, 0.5].
KR, KB = 0.2126, 0.0722
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
    """The decoded-frame and stylized-frame pools of one rank."""

    decoded: BufferPool
    stylized: BufferPool

    @classmethod
    def for_job(cls, manifest: JobManifest, batch_size: int, pinned: bool) -> Buffers:
        # Every stage can hold one buffer while the queues hold the rest.
        count = QUEUE_DEPTH + 2
        even_width, even_height = even_size(manifest.width, manifest.height)
        return cls(
            decoded=BufferPool(count, (batch_size, manifest.height, manifest.width, 3), pinned),
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


class _Pipe:
    """A bounded queue between two pipeline threads that gives up once the pipeline stops."""

    def __init__(self, stop: threading.Event) -> None:
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=QUEUE_DEPTH)
        self._stop = stop

    def put(self, item: Any) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def get(self) -> Any:
        while not self._stop.is_set():
            try:
                return self._queue.get(timeout=0.1)
            except queue.Empty:
                continue
        return _END


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


def stylize_chunk(chunk: ChunkSpec, manifest: JobManifest, input_dir: Path, output_dir: Path,
                  stylizer: Stylizer, buffers: Buffers, ffmpeg: str,
                  threads: int) -> tuple[int, StageClock]:
    """Decode, stylize and encode one chunk into its final place in ``output_dir``.

    Decoding and encoding run in their own threads with bounded queues between them, so FFmpeg
    works while the network does.

    Returns:
        The frames written and the seconds each stage spent.

    Raises:
        RuntimeError: The chunk did not decode to exactly the manifest's frame count.
        FFmpegError: Decoding or encoding failed.
    """
    target = jobdir.output_chunk_path(output_dir, chunk)
    target.parent.mkdir(parents=True, exist_ok=True)
    # A rank killed mid-chunk by an earlier run may have left its partial file behind.
    for stale in target.parent.glob(f".{target.name}.*.tmp"):
        stale.unlink(missing_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    width, height = manifest.width, manifest.height
    clock = StageClock()
    stop = threading.Event()
    errors: list[BaseException] = []
    decoded, stylized = _Pipe(stop), _Pipe(stop)
    counts = {"read": 0, "written": 0}

    def decode() -> None:
        with FrameReader(ffmpeg, input_dir / chunk.file, width, height, threads) as reader:
            while (buffer := buffers.decoded.take(stop)) is not None:
                started = time.perf_counter()
                count = reader.read_into(buffer.numpy())
                clock.decode += time.perf_counter() - started
                if not count:
                    buffers.decoded.give(buffer)
                    break
                decoded.put((buffer, count))
                if count < len(buffer):
                    break
            counts["read"] = reader.frames_read
        decoded.put(_END)

    def encode() -> None:
        even_width, even_height = even_size(width, height)
        with FrameWriter(ffmpeg, partial, even_width, even_height, manifest.encode.crf,
                         manifest.encode.preset, threads) as writer:
            while (item := stylized.get()) is not _END:
                buffer, count = item
                started = time.perf_counter()
                writer.write(buffer[:count].numpy())
                clock.encode += time.perf_counter() - started
                buffers.stylized.give(buffer)
            if stop.is_set():
                return
            started = time.perf_counter()
            writer.close()
            clock.encode += time.perf_counter() - started
            counts["written"] = writer.frames_written

    try:
        stages = [_run_stage("decode", decode, stop, errors),
                  _run_stage("encode", encode, stop, errors)]
        try:
            while (item := decoded.get()) is not _END:
                frames, count = item
                out = buffers.stylized.take(stop)
                if out is None:
                    break
                started = time.perf_counter()
                stylizer(frames, out, count)
                clock.infer += time.perf_counter() - started
                buffers.decoded.give(frames)
                stylized.put((out, count))
        except BaseException:
            stop.set()
            raise
        finally:
            stylized.put(_END)
            for stage in stages:
                stage.join()
        if errors:
            raise errors[0]
        if counts["read"] != chunk.frames or counts["written"] != chunk.frames:
            raise RuntimeError(
                f"chunk {chunk.index} ({input_dir / chunk.file}): decoded {counts['read']} "
                f"frames and encoded {counts['written']}, but the manifest says {chunk.frames}"
            )
        with partial.open("rb") as fh:
            os.fsync(fh.fileno())
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return counts["written"], clock


def log(placement: Placement | None, message: str) -> None:
    prefix = f"[rank {placement.rank}/{placement.size}] " if placement else ""
    print(prefix + message, flush=True)


def run(args: argparse.Namespace, comm: MPI.Comm) -> None:
    """Stylize the pending chunks of ``args.input`` into ``args.output`` on this rank.

    Raises:
        JobInputError: The job folder, the model or the device request is unusable.
    """
    started = time.perf_counter()
    rank = comm.Get_rank()
    input_dir, output_dir = args.input, args.output
    model_path = args.model or input_dir / jobdir.MODEL_NAME
    if args.batch_size < 1:
        raise JobInputError(f"--batch-size must be at least 1, got {args.batch_size}",
                            on_every_rank=True)
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
    stylizer = Stylizer(model, placement.device)
    buffers = Buffers.for_job(manifest, args.batch_size, pinned=stylizer.cuda)
    if rank == 0:
        log(placement, f"{len(plan.pending)} of {len(manifest.chunks)} chunks to do, "
                       f"{manifest.width}x{manifest.height}, {placement.size} ranks")
    log(placement, f"on {placement.host} {placement.device} ({placement.device_name}), "
                   f"{placement.threads} threads")

    counter = WorkCounter(comm)
    done_here: list[ChunkReport] = []
    while True:
        if args.fault_rank == rank and len(done_here) == args.fault_after_chunks:
            log(placement, f"fault injection: exiting abruptly after {len(done_here)} chunks")
            os._exit(FAULT_EXIT_CODE)
        position = counter.claim()
        if position >= len(plan.pending):
            break
        chunk = manifest.chunks[plan.pending[position]]
        chunk_started = time.perf_counter()
        frames, clock = stylize_chunk(chunk, manifest, input_dir, output_dir, stylizer, buffers,
                                      ffmpeg, placement.threads)
        seconds = time.perf_counter() - chunk_started
        report = ChunkReport(index=chunk.index, rank=rank, host=placement.host, frames=frames,
                             seconds=round(seconds, 4), device=placement.device_name,
                             decode_seconds=round(clock.decode, 4),
                             infer_seconds=round(clock.infer, 4),
                             encode_seconds=round(clock.encode, 4))
        jobdir.atomic_write_json(jobdir.done_path(output_dir, chunk), asdict(report))
        done_here.append(report)
        log(placement, f"chunk {chunk.stem}: {frames} frames in {seconds:.2f} s "
                       f"({frames / seconds:.1f} fps; decode {clock.decode:.2f} s, "
                       f"infer {clock.infer:.2f} s, encode {clock.encode:.2f} s)")
    counter.free()

    mine = RankSummary(rank=rank, host=placement.host, device=placement.device_name,
                       chunks=len(done_here), frames=sum(r.frames for r in done_here))
    everyone = comm.gather(mine, root=0)  # returns on rank 0 once every rank has finished
    if rank == 0:
        assert everyone is not None
        write_summary(output_dir, manifest, plan, everyone, time.perf_counter() - started,
                      placement)
    comm.Barrier()


def write_summary(output_dir: Path, manifest: JobManifest, plan: Plan, ranks: list[RankSummary],
                  wall_seconds: float, placement: Placement) -> None:
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
    )
    if summary.total_frames != manifest.total_frames:
        raise RuntimeError(f"chunk reports add up to {summary.total_frames} frames, "
                           f"the manifest to {manifest.total_frames}")
    jobdir.atomic_write_json(output_dir / jobdir.SUMMARY_NAME, asdict(summary))
    log(placement, f"done: {frames} frames in {wall_seconds:.1f} s "
                   f"({summary.fps} fps); summary " + json.dumps([asdict(r) for r in ranks]))


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
