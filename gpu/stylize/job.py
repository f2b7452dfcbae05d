"""One rank's run of the job: place it, plan, warm up, run its lanes, gather the summary."""

from __future__ import annotations

import argparse
import functools
import os
import threading
import time
from typing import TYPE_CHECKING

from gpu import jobdir
from gpu.ffmpeg import find_ffmpeg
from gpu.jobdir import RankSummary
from gpu.model import load_style_model
from gpu.stylize.defaults import (
    default_batch_size,
    default_decoder_threads,
    default_encoder_threads,
    default_encoders,
    resolve_compile_mode,
)
from gpu.stylize.errors import JobInputError
from gpu.stylize.frames import FrameLayout
from gpu.stylize.metrics import ProcessCpu, host_cpu_busy_fraction, read_cpu_ticks
from gpu.stylize.pipeline import Buffers, JobContext, Pipe, RankWork, run_lane, run_stage
from gpu.stylize.placement import WorkCounter, log, place
from gpu.stylize.plan import plan_job
from gpu.stylize.stylizer import PaintControls, Stylizer, warm_up_or_fall_back
from gpu.stylize.summary import write_summary

if TYPE_CHECKING:
    from mpi4py import MPI


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
    strength = model.default_strength if args.strength is None else args.strength
    try:
        model.set_strength(strength)
    except ValueError as err:
        raise JobInputError(f"--strength {strength}: {err}") from None
    pending_frames = sum(manifest.chunks[index].frames for index in plan.pending)
    compile_mode = resolve_compile_mode(
        args.compile, placement.device.type,
        pending_frames * manifest.width * manifest.height / 1e6 / placement.size)
    stylizer = Stylizer(model, placement.device, FrameLayout.of(manifest), compile_mode,
                        PaintControls(args.stroke_scale, args.preserve_colors))
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
                   f"batches of {batch_size}, compile {compile_mode}, strength {strength}, "
                   f"painted at {stylizer.working_size[1]}x{stylizer.working_size[0]}"
                   f"{' in the source colours' if args.preserve_colors else ''}"
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
    cpu_ticks_at_start, process_cpu_at_start = read_cpu_ticks(), ProcessCpu.now()
    work = RankWork(stylizer=stylizer, counter=counter, plan=plan, placement=placement,
                    fault_rank=args.fault_rank, fault_after_chunks=args.fault_after_chunks,
                    max_waiting_batches=args.max_waiting_batches)
    stop = threading.Event()
    errors: list[BaseException] = []
    job = JobContext(manifest=manifest, input_dir=input_dir, output_dir=output_dir,
                     placement=placement, ffmpeg=ffmpeg, requests=Pipe(stop), stop=stop,
                     encoder_threads=encoder_threads, decoder_threads=decoder_threads)
    lanes = [run_stage(f"lane {n}", functools.partial(run_lane, job, buffers), stop, errors)
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
    stage_cpu = job.cpu.split(process_cpu_at_start, ProcessCpu.now())
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
        host_cores=os.cpu_count() or 1,
        decode_cpu_seconds=_rounded(stage_cpu.decode),
        infer_cpu_seconds=_rounded(stage_cpu.infer),
        encode_cpu_seconds=_rounded(stage_cpu.encode),
    )
    host_cpu = "unknown" if host_cpu_busy is None else f"{host_cpu_busy:.0%}"
    log(placement, f"run: {mine.chunks} chunks, {mine.frames} frames in {run_seconds:.2f} s, "
                   f"device busy {mine.device_busy_fraction:.0%}, host CPU busy {host_cpu}")
    everyone = comm.gather(mine, root=0)  # returns on rank 0 once every rank has finished
    if rank == 0:
        assert everyone is not None
        now = time.perf_counter()
        write_summary(output_dir, manifest, plan, everyone, placement,
                      wall_seconds=now - started, run_seconds=now - run_started,
                      strength=strength, paint=stylizer.paint,
                      working_size=stylizer.working_size)
    comm.Barrier()


def _rounded(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 3)
