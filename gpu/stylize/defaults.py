"""Tuning defaults of the GPU job: batch sizes, chunks in flight, FFmpeg threads, compile mode."""

from __future__ import annotations

QUEUE_DEPTH = 2
"""Batches of one chunk waiting between its decoder, the network and its encoder: enough to
smooth out their jitter."""

COMPILE_MODES = ("none", "default", "reduce-overhead", "max-autotune",
                 "max-autotune-no-cudagraphs")
"""``--compile`` choices: no compilation, or a ``torch.compile`` mode."""

CUDA_GRAPH_MODES = frozenset({"reduce-overhead", "max-autotune"})
"""Modes that replay CUDA graphs: they record during the first calls, so warm up with three."""

DEFAULT_STROKE_SCALE = 1.0
"""``--stroke-scale`` default: the network paints at :data:`gpu.controls.REFERENCE_HEIGHT`
lines, where strokes look alike at 720p and 1080p (see :mod:`gpu.controls`)."""

CPU_BATCH_SIZE = 2
"""Frames per forward pass on the CPU: small batches keep their activations in cache (see
docs/performance.md)."""

CUDA_BATCH_SIZE = 16
CUDA_BATCH_PIXELS = CUDA_BATCH_SIZE * 1920 * 1080
"""Frames per forward pass under CUDA: 16 up to 1080p, fewer for larger frames so that a batch
holds at most 16 1080p frames' pixels (each lane keeps eight batches of pinned host memory).
Larger batches mean fewer launches, pipe writes and hand-offs per frame (see
docs/performance.md)."""


def default_batch_size(device_type: str, width: int, height: int) -> int:
    """Frames per forward pass when ``--batch-size`` is not given."""
    if device_type != "cuda":
        return CPU_BATCH_SIZE
    return max(1, min(CUDA_BATCH_SIZE, CUDA_BATCH_PIXELS // (width * height)))


CORES_PER_ENCODER = 2
"""Default chunks in flight per rank: one per this many of its cores. One x264 process cannot
keep many cores busy: its frame threads wait on one another's reference rows, and it idles
while its chunk starts and ends. Each chunk's x264 may still use all of the rank's threads
(see :func:`default_encoder_threads`; measurements in docs/performance.md)."""

DECODER_THREADS = 2
"""Threads of each chunk decoder (at most the rank's threads). Decoding is cheap next to x264
(see docs/performance.md). A second thread, on which FFmpeg decodes the next frame, lets a
decoder catch up after the network drained its queue. More would only add threads competing
with the encoders for the cores: FFmpeg's default is one per core, for every decoder."""


def default_encoders(threads: int) -> int:
    """Chunks a rank keeps in flight when ``--encoders`` is not given."""
    return max(1, threads // CORES_PER_ENCODER)


def default_encoder_threads(threads: int) -> int:
    """x264 threads of each chunk in flight when ``--encoder-threads`` is not given: all of the
    rank's threads.

    x264's frame threads wait on one another's rows, and threads to spare let a process take
    up the cores another leaves idle while its chunk starts or ends (measurements in
    docs/performance.md).
    """
    return max(1, threads)


def default_decoder_threads(threads: int) -> int:
    """Threads of each chunk decoder: :data:`DECODER_THREADS`, at most the rank's threads."""
    return max(1, min(DECODER_THREADS, threads))


AUTO_COMPILE_MEGAPIXEL_FRAMES = 60_000
"""Work per rank (frames times megapixels) from which ``--compile auto`` compiles with CUDA
graphs: about 16 minutes of 1080p at 30 fps, where the compile's seconds are won back. Only
1080p was measured; other sizes scale by megapixels, an assumption (see
docs/performance.md)."""


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

