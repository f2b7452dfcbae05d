"""What a finished Azure ML job left behind: its logs, its error, and what they mean.

``jobs.stream`` on a finished job prints only a header (and raises the job's error if it
failed), so the logs are downloaded with ``jobs.download``: the job's default output holds
``user_logs/std_log_process_<rank>.txt``, one file per MPI process.
"""

from __future__ import annotations

import contextlib
import io
import re
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from azure.core.exceptions import ResourceNotFoundError

from tasks.compute.azureml.redaction import redact

TAIL_LINES_PER_PROCESS = 20
TAIL_LINES = 60

_PREEMPTION = re.compile(
    # Whole words only: a path such as /tmp/test_preemption_x inside an error must not count.
    r"PreemptionError|\bpreempt(?:ed|ion)?\b|low[- ]?priority[^.]*(evict|reclaim)|evicted"
    r"|node[^.]{0,40}\blost\b|lost node"
    r"|NodeLost|node[^.]{0,40}(was removed|became unusable|unusable)",
    re.IGNORECASE,
)
_NO_CUDA = re.compile(
    # gpu.stylize's and gpu.train's refusal under --device cuda, and torch's own warnings.
    r"no CUDA device is available[^\n]*|CUDA initialization: [^\n]*"
    r"|NVIDIA driver on your system is too old[^\n]*|Found no NVIDIA driver[^\n]*"
    r"|CUDA driver version is insufficient[^\n]*"
)
# jobs.stream() writes to sys.stdout; redirecting stdout is process-wide, so one at a time.
_STDOUT_LOCK = threading.Lock()


def is_preemption(error: str) -> bool:
    """Whether a job error means the node went away (retry) rather than the job failing."""
    return bool(_PREEMPTION.search(error))


def cuda_failure(log_text: str) -> str | None:
    """What ``log_text`` says about CUDA being unusable on the node (the job's refusal, torch's
    reason), or None when it says nothing of the kind."""
    found = dict.fromkeys(match.group(0).strip() for match in _NO_CUDA.finditer(log_text))
    return "; ".join(list(found)[:3]) or None


@dataclass
class JobLogs:
    """The logs of one finished job, redacted.

    Attributes:
        processes: ``(process label, text)`` per MPI process, in rank order.
        error: The job's error as Azure ML reports it; None when it did not fail.
        problem: Why the logs could not be read, if they could not.
    """

    processes: list[tuple[str, str]]
    error: str | None = None
    problem: str | None = None

    @property
    def text(self) -> str:
        return "\n".join(text for _, text in self.processes)

    def tail(self) -> str:
        """The last lines of each process's log, labelled, at most :data:`TAIL_LINES` in all."""
        if self.problem and not self.processes:
            return f"(logs unavailable: {self.problem})"
        parts = []
        for label, text in self.processes:
            lines = [line for line in text.splitlines() if line.strip()]
            parts += [f"[{label}] {line}" for line in lines[-TAIL_LINES_PER_PROCESS:]]
        return "\n".join(parts[-TAIL_LINES:])


def _process_label(path: Path) -> str:
    found = re.search(r"process_(\d+)", path.name)
    return f"rank {found.group(1)}" if found else path.stem


def _rank_order(path: Path) -> tuple[int, str]:
    found = re.search(r"process_(\d+)", path.name)
    return (int(found.group(1)) if found else 1 << 30, path.name)


def read_job_logs(jobs: Any, name: str) -> JobLogs:
    """Download the logs of finished job ``name`` and read its error (``jobs``: ``MLClient.jobs``).

    Never raises for a missing log or error: the cause of the failure matters more.
    """
    processes: list[tuple[str, str]] = []
    problem = None
    with tempfile.TemporaryDirectory() as tmp:
        try:
            jobs.download(name, download_path=tmp)  # the default output: logs and artifacts
        except Exception as exc:  # no data role on the workspace storage, or no logs at all
            problem = redact(f"{type(exc).__name__}: {exc}")
        logs = sorted(Path(tmp).glob("artifacts/user_logs/std_log*.txt"), key=_rank_order)
        for path in logs:
            text = path.read_text(errors="replace")
            processes.append((_process_label(path), redact(text)))
    return JobLogs(processes=processes, error=_job_error(jobs, name), problem=problem)


def _job_error(jobs: Any, name: str) -> str | None:
    """The error of job ``name``: ``jobs.stream`` raises it for a failed job (its only public
    route); what it prints is only a header, and is dropped."""
    with _STDOUT_LOCK, contextlib.redirect_stdout(io.StringIO()):
        try:
            jobs.stream(name)
        except ResourceNotFoundError as exc:
            return redact(f"job vanished: {exc}")
        except Exception as exc:  # JobException carries the job's error
            return redact(str(exc))
    return None
