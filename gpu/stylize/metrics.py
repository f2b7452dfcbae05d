"""How busy the job kept its devices and the host's CPUs, and the job's summary."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from gpu import jobdir
from gpu.jobdir import JobManifest, JobSummary, RankSummary
from gpu.stylize.placement import Placement, log
from gpu.stylize.plan import Plan


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


