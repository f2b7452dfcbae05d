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
that; see :func:`~gpu.stylize.defaults.default_encoder_threads`) and each decoder a small fixed
count (:data:`~gpu.stylize.defaults.DECODER_THREADS`). A chunk's output is renamed into place
and then its report is written, so a rerun after any failure redoes only the chunks without a
report. When every rank is through, rank 0 writes ``summary.json``.

Input chunks are lossless, raw or Ut Video, in the manifest's ``input_format``: ``yuv420p``
(limited range, in the YCbCr matrix the manifest names) for most sources, ``gbrp`` (planar RGB)
for the rest (see :mod:`tasks.media.chunking`). FFmpeg decodes Ut Video ones to their own
planar format on the pipe, converting and packing nothing, since decoding is the host's other
big cost beside x264; the raw planes go to the device as they are, and the conversion to RGB
(chroma upsampling and the matrix at limited range, or reordering G, B, R planes) runs there,
inside the compiled step under ``--compile``. Chunks of codec ``rawvideo`` already hold those
planes: they are read straight into the batch buffers, with no FFmpeg decoder at all (see
:func:`~gpu.stylize.frames.open_chunk_reader`).

Before it claims any chunk, each rank warms the network up on a batch of the job's shape: under
``--compile`` (``torch.compile``; by default only for long CUDA jobs) that is when compilation
happens, and on CUDA when cuDNN picks its algorithms. The summary reports the warm-up apart
from the steady-state rate, the share of the run each device spent on the rank's batches (timed
with CUDA events), how busy the host's CPUs were over the run (from ``/proc/stat``), the share
of the host's cores each stage (decode, infer, encode) kept busy (see
:mod:`~gpu.stylize.metrics`), and the encoder's settings: enough to see which is the limit.

Three controls shape the painting (see :mod:`gpu.controls`): ``--strength`` (0, near the
input, to 1, the full style; baked into the network once, so it costs nothing per frame),
``--stroke-scale`` (the brush size: the network paints at a working size that is the same share
of any frame, and the device resizes each batch to it and back) and ``--preserve-colors``
(luminance from the painting, chroma from the source, in the output's BT.709 matrix). The
summary records them and the working size.

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

Only torch, numpy, mpi4py, safetensors and an FFmpeg binary are needed: this package never
imports Prefect or anything from ``tasks/``.

Modules: :mod:`~gpu.stylize.cli` (the command line and its checks), :mod:`~gpu.stylize.job`
(one rank's run), :mod:`~gpu.stylize.defaults` (tuning defaults), :mod:`~gpu.stylize.placement`
(device, threads, the MPI work counter), :mod:`~gpu.stylize.plan` (manifest checks, pending
chunks), :mod:`~gpu.stylize.frames` (input frame layout and readers), :mod:`~gpu.stylize.colour`
(colour conversion), :mod:`~gpu.stylize.stylizer` (the network step and its compile),
:mod:`~gpu.stylize.pipeline` (the lanes), :mod:`~gpu.stylize.metrics` (busy shares, summary).
"""

# The names bench/, tasks/ and tests import from ``gpu.stylize`` itself.
from gpu.stylize.cli import get_args_parser, main
from gpu.stylize.colour import (
    gbrp_to_rgb,
    raw_to_rgb,
    rgb_to_yuv420,
    upsample_chroma,
    yuv420_to_rgb,
)
from gpu.stylize.defaults import (
    COMPILE_MODES,
    default_decoder_threads,
    default_encoders,
    resolve_compile_mode,
)
from gpu.stylize.errors import FAULT_EXIT_CODE, INPUT_ERROR_EXIT_CODE, CompileError, JobInputError
from gpu.stylize.frames import FrameLayout, open_chunk_reader
from gpu.stylize.stylizer import Stylizer

__all__ = [
    "COMPILE_MODES",
    "FAULT_EXIT_CODE",
    "INPUT_ERROR_EXIT_CODE",
    "CompileError",
    "FrameLayout",
    "JobInputError",
    "Stylizer",
    "default_decoder_threads",
    "default_encoders",
    "gbrp_to_rgb",
    "get_args_parser",
    "main",
    "open_chunk_reader",
    "raw_to_rgb",
    "resolve_compile_mode",
    "rgb_to_yuv420",
    "upsample_chroma",
    "yuv420_to_rgb",
]
