"""What every compute backend shares: the job, its result, its error and the retry policy."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from gpu.jobdir import SUMMARY_NAME

ProgressCallback = Callable[[], None]
"""Called every few seconds while the job runs; it reads progress from the output folder."""


@dataclass(frozen=True)
class GpuJob:
    """One run of a ``gpu/`` module over an input and an output folder (``gpu/jobdir.py``).

    Attributes:
        module: ``gpu.stylize`` or ``gpu.train``.
        input_dir: Folder the job reads (the ``uri_folder`` input on Azure ML).
        output_dir: Folder the job writes; finished work in it survives a retry or a rerun.
        args: Extra command-line arguments after ``--input``/``--output``.
        ranks: MPI processes in all (locally); GPUs per node times nodes on Azure ML.
        name: Human-readable name, used as the Azure ML display name.
        flow_run_id: The Prefect flow run the job belongs to; Azure ML jobs carry it as a tag
            so that the flow run's cancellation and crash hooks can find and cancel them.
    """

    module: str
    input_dir: Path
    output_dir: Path
    args: tuple[str, ...] = ()
    ranks: int = 1
    name: str = "restyle"
    flow_run_id: str | None = None


@dataclass
class GpuJobResult:
    """How a job ended.

    Attributes:
        backend: ``local`` or ``azureml``.
        seconds: Wall time of the whole step, retries and transfers included.
        attempts: Runs of the job, 1 when nothing was retried.
        reused_chunks: Chunks already finished in the output folder when the last run started
            (by earlier attempts or an earlier run of the flow), so not stylized again; 0 for
            jobs without chunks.
        retry_reasons: Why each retried run ended, in order.
        log_tail: The end of the last run's output.
        links: Label to URL worth publishing (``azureml-studio``); never a credential.
        mpi_library: The MPI library the job ran on, when the job's summary records it.
    """

    backend: str
    seconds: float
    attempts: int = 1
    reused_chunks: int = 0
    retry_reasons: list[str] = field(default_factory=list)
    log_tail: str = ""
    links: dict[str, str] = field(default_factory=dict)
    mpi_library: str = ""


class GpuJobError(RuntimeError):
    """The GPU job failed.

    Attributes:
        log_tail: The end of its output, for the error report.
        retryable: The failure was the machine's (a lost rank or node), not the job's; set on
            an error raised after the attempts ran out.
    """

    def __init__(self, message: str, log_tail: str = "", retryable: bool = False) -> None:
        super().__init__(message)
        self.log_tail = log_tail
        self.retryable = retryable


class ComputeBackend(Protocol):
    """Runs a :class:`GpuJob` to completion, retrying lost ranks or nodes, or raises
    :class:`GpuJobError`."""

    name: str

    def run(self, job: GpuJob, on_progress: ProgressCallback | None = None) -> GpuJobResult: ...


def backoff_seconds(first: float, retry: int) -> float:
    """The wait before retry number ``retry`` (1 for the first): ``first``, doubling after."""
    return first * 2 ** (retry - 1)


def summary_facts(output_dir: Path) -> tuple[int, str]:
    """``(reused chunks, MPI library)`` from the job's ``summary.json``; ``(0, "")`` without one.

    Read as plain JSON, not through :class:`gpu.jobdir.JobSummary`, so that a field a newer job
    writes is seen whatever the reader's version.
    """
    try:
        data = json.loads((output_dir / SUMMARY_NAME).read_text())
    except (OSError, ValueError):
        return 0, ""
    return int(data.get("chunks_skipped") or 0), str(data.get("mpi_library_version") or "")


def tail(text: str, lines: int = 40) -> str:
    """The last ``lines`` lines of ``text``."""
    return "\n".join(text.splitlines()[-lines:])
