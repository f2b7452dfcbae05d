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

