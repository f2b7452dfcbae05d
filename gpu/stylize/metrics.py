"""How busy a rank kept the host's CPUs: the whole host's share, and each stage's CPU time.

A rank's CPU time splits into its pipeline's stages (decode, infer, encode) like this:

* each decode thread measures its own CPU time and its FFmpeg decoder's, read from
  ``/proc/PID/stat`` once the decoder has written its last frame and before it is reaped (a
  finished process's times stay readable until its parent waits for it);
* each lane thread, which writes to its chunks' x264 encoders, measures its own CPU time;
* what the rank's children used in all is exact (``os.times``, once every child is reaped):
  the encoders' share is that total less the decoders';
* the rest of the rank's own CPU time is the infer stage: the network on the CPU, or feeding
  the GPU (uploads, launches, downloads), and MPI.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


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


@dataclass(frozen=True)
class ProcessCpu:
    """CPU seconds this process has used so far: its own threads', and its reaped children's."""

    own: float
    children: float

    @classmethod
    def now(cls) -> ProcessCpu:
        times = os.times()
        return cls(own=times.user + times.system,
                   children=times.children_user + times.children_system)


@dataclass(frozen=True)
class _ProcStat:
    ppid: int
    cpu_ticks: int
    start_ticks: int


def _read_proc_stat(path: Path) -> _ProcStat | None:
    try:
        text = path.read_text()
    except OSError:
        return None
    # The command name, in parentheses, may hold spaces: the fields follow the last ')'.
    fields = text[text.rfind(")") + 2:].split()
    try:
        return _ProcStat(ppid=int(fields[1]), cpu_ticks=int(fields[11]) + int(fields[12]),
                         start_ticks=int(fields[19]))
    except (IndexError, ValueError):
        return None


@dataclass(frozen=True)
class ChildProcess:
    """A child process of this one, named by its pid and its start time (pids are reused)."""

    pid: int
    start_ticks: int

    def cpu_seconds(self) -> float | None:
        """Its user and system CPU time so far: final once it has exited, until it is reaped;
        None after that."""
        stat = _read_proc_stat(PROC / str(self.pid) / "stat")
        if stat is None or stat.start_ticks != self.start_ticks:
            return None
        return stat.cpu_ticks / CLOCK_TICKS


def find_child_process(argument: str) -> ChildProcess | None:
    """This process's running child that has ``argument`` among its command-line arguments;
    None when there is none, or no ``/proc`` to look in."""
    me, wanted = os.getpid(), argument.encode()
    try:
        entries = [entry.name for entry in os.scandir(PROC) if entry.name.isdigit()]
    except OSError:
        return None
    for name in entries:
        stat = _read_proc_stat(PROC / name / "stat")
        if stat is None or stat.ppid != me:
            continue
        try:
            argv = (PROC / name / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if wanted in argv:
            return ChildProcess(int(name), stat.start_ticks)
    return None


@dataclass(frozen=True)
class StageSeconds:
    """CPU seconds one rank's stages used over its run; None where they could not be told
    apart (a decoder whose CPU time could not be read)."""

    decode: float | None
    infer: float
    encode: float | None


class StageCpu:
    """The CPU time a rank's decode and lane threads report as they end (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.decode_threads = 0.0
        self.decoder_processes = 0.0
        self.lane_threads = 0.0
        self.unmeasured_decoders = 0

    def add_decode(self, thread_seconds: float, process_seconds: float | None) -> None:
        """One chunk's decode thread, and its FFmpeg decoder (None: unreadable); a chunk read
        without FFmpeg passes 0 for the decoder."""
        with self._lock:
            self.decode_threads += thread_seconds
            if process_seconds is None:
                self.unmeasured_decoders += 1
            else:
                self.decoder_processes += process_seconds

    def add_lane(self, thread_seconds: float) -> None:
        with self._lock:
            self.lane_threads += thread_seconds

    def split(self, start: ProcessCpu, end: ProcessCpu) -> StageSeconds:
        """The rank's CPU time between two snapshots, taken before its lanes started and after
        they ended (so every child is reaped), by stage."""
        own, children = end.own - start.own, end.children - start.children
        infer = max(0.0, own - self.decode_threads - self.lane_threads)
        if self.unmeasured_decoders:
            return StageSeconds(decode=None, infer=infer, encode=None)
        return StageSeconds(decode=self.decode_threads + self.decoder_processes, infer=infer,
                            encode=self.lane_threads + max(0.0, children - self.decoder_processes))
