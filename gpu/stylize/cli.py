"""The GPU job's command line: ``get_args_parser()`` and ``main(args)``."""

from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path

from gpu.controls import REFERENCE_HEIGHT, STROKE_SCALE_RANGE, check_stroke_scale
from gpu.model import check_strength
from gpu.stylize.defaults import (
    COMPILE_MODES,
    CORES_PER_ENCODER,
    CPU_BATCH_SIZE,
    CUDA_BATCH_SIZE,
    DEFAULT_STROKE_SCALE,
)
from gpu.stylize.errors import FAULT_EXIT_CODE, INPUT_ERROR_EXIT_CODE, JobInputError
from gpu.stylize.job import run


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gpu.stylize",
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
    controls = parser.add_argument_group("painting controls")
    controls.add_argument("--strength", type=float, default=None,
                          help="style strength from 0 (near the input) to 1 (the full style) "
                               "(default: the model's own default strength; networks trained "
                               "without a strength control take only that)")
    low, high = STROKE_SCALE_RANGE
    controls.add_argument("--stroke-scale", type=float, default=DEFAULT_STROKE_SCALE,
                          help=f"brush size, {low} to {high}: the network paints at "
                               f"{REFERENCE_HEIGHT} / STROKE_SCALE lines and the frames are "
                               f"resized on the device (default {DEFAULT_STROKE_SCALE})")
    controls.add_argument("--preserve-colors", action="store_true",
                          help="keep the source's colours: luminance from the painting, "
                               "chroma from the source")
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


def check_args(args: argparse.Namespace) -> None:
    """Refuse option values no rank can run with, before any rank starts work.

    Raises:
        JobInputError: An option is out of range (every rank finds the same).
    """
    for option in ("batch_size", "encoders", "encoder_threads"):
        if getattr(args, option) < 0:
            raise JobInputError(f"--{option.replace('_', '-')} must be at least 1 (or 0 for the "
                                f"default), got {getattr(args, option)}", on_every_rank=True)
    if args.max_waiting_batches < 0:
        raise JobInputError(f"--max-waiting-batches must be at least 0, got "
                            f"{args.max_waiting_batches}", on_every_rank=True)
    try:
        if args.strength is not None:
            check_strength(args.strength)
    except ValueError as err:
        raise JobInputError(f"--strength: {err}", on_every_rank=True) from None
    try:
        check_stroke_scale(args.stroke_scale)
    except ValueError as err:
        raise JobInputError(f"--stroke-scale: {err}", on_every_rank=True) from None


def main(args: argparse.Namespace) -> None:
    """Run the job on this rank; any failure ends the whole job with a non-zero status."""
    # Imported here, not at the top: importing mpi4py.MPI initialises MPI, which tests and
    # tools that only import this module must not do.
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    try:
        check_args(args)
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


