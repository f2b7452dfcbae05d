"""The job's summary: what every rank did, how busy the devices and cores were, and with which
settings."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import mpi4py
from mpi4py import MPI

from gpu import jobdir
from gpu.jobdir import JobManifest, JobSummary, RankSummary
from gpu.stylize.pipeline import encoder_name
from gpu.stylize.placement import Placement, log
from gpu.stylize.plan import Plan
from gpu.stylize.stylizer import PaintControls


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


def host_cpu_busy_fraction(ranks: list[RankSummary]) -> float | None:
    """Mean over the job's hosts of their busy share (ranks on one host report the same)."""
    by_host = {r.host: r.host_cpu_busy_fraction for r in ranks}
    if not by_host or None in by_host.values():
        return None
    return sum(by_host.values()) / len(by_host)


def core_share(ranks: list[RankSummary], run_seconds: float, stage: str) -> float | None:
    """The share of all the job's hosts' cores over ``run_seconds`` that one stage kept busy.

    Args:
        stage: A :class:`RankSummary` field of CPU seconds, e.g. ``encode_cpu_seconds``.

    Returns:
        The share in [0, 1]; None when a rank could not measure the stage.
    """
    seconds = [getattr(r, stage) for r in ranks]
    cores = sum({r.host: r.host_cores for r in ranks}.values())
    if None in seconds or cores < 1 or run_seconds <= 0:
        return None
    return min(1.0, sum(seconds) / (cores * run_seconds))


def _round(share: float | None) -> float | None:
    return None if share is None else round(share, 4)


def _percent(share: float | None) -> str:
    return "unknown" if share is None else f"{share:.0%}"


def write_summary(output_dir: Path, manifest: JobManifest, plan: Plan, ranks: list[RankSummary],
                  placement: Placement, wall_seconds: float, run_seconds: float, *,
                  strength: float, paint: PaintControls, working_size: tuple[int, int]) -> None:
    """Check that every chunk is done, then write ``summary.json`` (rank 0 only).

    Args:
        strength: The style strength the network painted with.
        paint: The other painting controls.
        working_size: The (height, width) the network painted at.
    """
    missing = [c.stem for c in manifest.chunks if not jobdir.is_chunk_done(output_dir, c)]
    if missing:
        raise RuntimeError(f"every rank finished but chunks {', '.join(missing[:10])} "
                           "have no output: the work counter lost them")
    frames = sum(r.frames for r in ranks)
    # Derived shares use the recorded figures, so a reader can recompute them from the summary.
    run_seconds = round(run_seconds, 3)
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
        run_seconds=run_seconds,
        steady_fps=round(frames / run_seconds, 2) if run_seconds > 0 else 0.0,
        device_busy_fraction=round(device_busy_fraction(ranks, run_seconds), 4),
        input_pix_fmt=manifest.input_format.pix_fmt,
        input_matrix=manifest.input_format.matrix,
        encoder=encoder_name(),
        encoder_preset=manifest.encode.preset,
        encoder_crf=manifest.encode.crf,
        encoder_threads=ranks[0].encoder_threads,
        host_cpu_busy_fraction=_round(host_cpu_busy_fraction(ranks)),
        decode_core_share=_round(core_share(ranks, run_seconds, "decode_cpu_seconds")),
        infer_core_share=_round(core_share(ranks, run_seconds, "infer_cpu_seconds")),
        encode_core_share=_round(core_share(ranks, run_seconds, "encode_cpu_seconds")),
        strength=strength,
        stroke_scale=paint.stroke_scale,
        preserve_colors=paint.preserve_colors,
        working_height=working_size[0],
        working_width=working_size[1],
        mpi_library_version=MPI.Get_library_version().splitlines()[0].strip(),
        mpi4py_version=mpi4py.__version__,
    )
    if summary.total_frames != manifest.total_frames:
        raise RuntimeError(f"chunk reports add up to {summary.total_frames} frames, "
                           f"the manifest to {manifest.total_frames}")
    jobdir.atomic_write_json(output_dir / jobdir.SUMMARY_NAME, asdict(summary))
    log(placement, f"done: {frames} frames in {wall_seconds:.1f} s ({summary.fps} fps; "
                   f"{summary.steady_fps} fps after a {summary.warmup_seconds:.1f} s warm-up, "
                   f"device busy {summary.device_busy_fraction:.0%}, cores busy decoding "
                   f"{_percent(summary.decode_core_share)}, inferring "
                   f"{_percent(summary.infer_core_share)}, encoding "
                   f"{_percent(summary.encode_core_share)}); summary "
                   + json.dumps([asdict(r) for r in ranks]))


