"""The lane pipeline of a rank: each chunk in flight decodes and encodes in its own threads,
while the rank's main thread runs the network for all of them and claims their chunks."""

from __future__ import annotations

import collections
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gpu import jobdir
from gpu.jobdir import ChunkReport, ChunkSpec, EncodeSettings, JobManifest
from gpu.stylize.defaults import QUEUE_DEPTH
from gpu.stylize.errors import FAULT_EXIT_CODE
from gpu.stylize.frames import FrameLayout, open_chunk_reader
from gpu.stylize.metrics import StageCpu, find_child_process
from gpu.stylize.placement import Placement, WorkCounter, log
from gpu.stylize.plan import Plan
from gpu.stylize.stylizer import Stylizer
from gpu.video_io import (
    FrameReader,
    FrameWriter,
    encode_argv,
    even_size,
    yuv420_frame_bytes,
)


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


END = object()
"""Ends one chunk's stream of stylized batches; also what a pipe returns once the rank stops."""

LANE_DONE = object()
"""A lane has no more chunks to do."""


class Pipe:
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
        return END


@dataclass(frozen=True)
class Batch:
    """Decoded frames for the network, and where its output goes."""

    frames: torch.Tensor
    out: torch.Tensor
    count: int
    buffers: Buffers
    clock: StageClock
    reply: Pipe


@dataclass(frozen=True)
class ChunkEnd:
    """Follows a chunk's last batch, so its encoder learns the end after every batch."""

    reply: Pipe


@dataclass(frozen=True)
class Claim:
    """A lane asks for its next chunk, handing in the report of the one it just finished."""

    reply: Pipe
    finished: ChunkReport | None


def run_stage(name: str, body: Callable[[], None], stop: threading.Event,
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
    requests: Pipe
    stop: threading.Event
    encoder_threads: int = 1
    decoder_threads: int = 1
    cpu: StageCpu = field(default_factory=StageCpu)


def encoder_name() -> str:
    """The FFmpeg encoder of the stylized chunks, read from the writers' own command line so
    that the summary names what ran."""
    defaults = EncodeSettings()
    argv = encode_argv("ffmpeg", Path(os.devnull), 2, 2, crf=defaults.crf, preset=defaults.preset)
    return argv[argv.index("-c:v") + 1]


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
    stylized = Pipe(stop)
    frames_read = 0

    def decode() -> None:
        nonlocal frames_read
        thread_cpu, decoder_cpu = time.thread_time(), None
        source, layout = job.input_dir / chunk.file, FrameLayout.of(manifest)
        try:
            with open_chunk_reader(job.ffmpeg, source, layout, job.decoder_threads) as reader:
                runs_ffmpeg = isinstance(reader, FrameReader)  # raw chunks need no decoder
                decoder = find_child_process(str(source)) if runs_ffmpeg else None
                decoder_cpu = None if runs_ffmpeg else 0.0
                # Read no further than the manifest's count, so the decoder's CPU time can be
                # read after its last frame and before the read that meets its end reaps it.
                while reader.frames_read < chunk.frames:
                    if (frames := buffers.decoded.take(stop)) is None:
                        return
                    if (out := buffers.stylized.take(stop)) is None:
                        return
                    wanted = min(len(frames), chunk.frames - reader.frames_read)
                    started = time.perf_counter()
                    count = reader.read_into(frames.numpy()[:wanted])
                    clock.decode += time.perf_counter() - started
                    if count:
                        job.requests.put(Batch(frames, out, count, buffers, clock, stylized))
                    else:
                        buffers.decoded.give(frames)
                        buffers.stylized.give(out)
                    if count < wanted:
                        break  # fewer frames than the manifest says: the frame check reports it
                if decoder:
                    decoder_cpu = decoder.cpu_seconds()
                # Frames past the manifest's count are counted for the frame check too.
                spare = np.empty((1, layout.frame_bytes), np.uint8)
                while reader.read_into(spare):
                    pass
                frames_read = reader.frames_read
            job.requests.put(ChunkEnd(stylized))
        finally:
            job.cpu.add_decode(time.thread_time() - thread_cpu, decoder_cpu)

    try:
        decoder = run_stage("decode", decode, stop, errors)
        try:
            even_width, even_height = even_size(width, height)
            with FrameWriter(job.ffmpeg, partial, even_width, even_height, manifest.encode.crf,
                             manifest.encode.preset, job.encoder_threads) as writer:
                while (item := stylized.get()) is not END:
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
    placement, replies = job.placement, Pipe(job.stop)
    finished: ChunkReport | None = None
    thread_cpu = time.thread_time()
    try:
        while True:
            job.requests.put(Claim(replies, finished))
            chunk = replies.get()
            if chunk is None or chunk is END:
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
        job.cpu.add_lane(time.thread_time() - thread_cpu)
        job.requests.put(LANE_DONE)


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

    def serve(self, requests: Pipe, lanes: int) -> None:
        """Answer the lanes' requests until all of them are done, or the rank stops."""
        held: collections.deque[Claim] = collections.deque()
        while lanes:
            # Never blocks with a claim held: a held claim waits only on queued batches.
            while held and self._may_start_chunk(requests):
                self._answer(held.popleft())
            item = requests.get()
            if item is END:
                return
            if item is LANE_DONE:
                lanes -= 1
            elif isinstance(item, Claim):
                if item.finished is not None:
                    self.reports.append(item.finished)
                    self.chunks_in_flight -= 1
                if self._may_start_chunk(requests):
                    self._answer(item)
                else:
                    held.append(item)
            elif isinstance(item, ChunkEnd):
                item.reply.put(END)
            else:
                self._stylize(item)

    def _may_start_chunk(self, requests: Pipe) -> bool:
        return (not self.max_waiting_batches or not self.chunks_in_flight
                or requests.waiting() <= self.max_waiting_batches)

    def _answer(self, claim: Claim) -> None:
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

    def _stylize(self, batch: Batch) -> None:
        started = time.perf_counter()
        self.device_seconds += self.stylizer(batch.frames, batch.out, batch.count)
        seconds = time.perf_counter() - started
        batch.clock.infer += seconds
        self.infer_seconds += seconds
        batch.buffers.decoded.give(batch.frames)
        batch.reply.put((batch.out, batch.count))


