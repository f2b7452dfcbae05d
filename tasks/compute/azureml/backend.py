"""The Azure ML backend: the GPU job as an MPI command job on a (low-priority) GPU cluster.

A run uploads the input folder, submits the job (:mod:`~tasks.compute.azureml.spec`), polls it
to a terminal state, mirrors the done reports for progress and downloads the output. The output
folder is the same for every attempt at the same content, so a resubmission after a preemption
or a lost node (or a rerun of the whole flow) redoes only the chunks not yet done. Those are
retried with backoff up to ``compute.gpu_attempts`` submissions; every other failure fails fast,
CUDA missing on the node among them. A job that cannot start within ``queue_timeout_minutes``,
or runs past ``run_timeout_minutes``, is canceled and the run fails saying which. Text that
leaves this module goes through :func:`~tasks.compute.azureml.redaction.redact`.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError

from tasks.compute.azureml import client as clients
from tasks.compute.azureml.folders import BlobJobStorage, JobFolderStorage
from tasks.compute.azureml.logs import JobLogs, cuda_failure, is_preemption, read_job_logs
from tasks.compute.azureml.redaction import redact
from tasks.compute.azureml.spec import (
    FLOW_RUN_TAG,
    JobPaths,
    build_command_job,
    job_key,
    resolve_environment,
    stage_code,
)
from tasks.compute.base import (
    GpuJob,
    GpuJobError,
    GpuJobResult,
    ProgressCallback,
    backoff_seconds,
    summary_facts,
)
from tasks.settings import RestyleSettings

if TYPE_CHECKING:
    from azure.ai.ml import MLClient
    from azure.ai.ml.entities import Command

MAX_POLL_FAILURES = 20
"""Consecutive failed status polls tolerated before giving up on a job (and cancelling it)."""
TERMINAL_STATUSES = frozenset({"Completed", "Failed", "Canceled", "NotResponding", "Paused"})
WAITING_STATUSES = frozenset({"NotStarted", "Queued", "Preparing", "Provisioning", "Starting"})
"""Before the job's command runs: waiting for nodes, building or pulling the image."""
CANCEL_WAIT_POLLS = 20
"""Polls spent waiting for a job canceled at its run deadline to stop, for its logs."""

Logger = logging.Logger | logging.LoggerAdapter[Any]


class DeadlineExpired(GpuJobError):
    """The job waited or ran past its deadline and was canceled."""


class AzureMLBackend:
    """:class:`~tasks.compute.base.ComputeBackend` submitting the GPU job to Azure ML.

    Args:
        settings: The settings tree (``settings.azureml`` and the retry limits of
            ``settings.compute`` are used).
        logger: Receives status changes and the job's log lines (a Prefect run logger works).
        ml_client: Workspace client; built from settings with azure-identity when omitted.
        storage: Job folder storage; the data account's job container when omitted.
        clock: Seconds from a fixed point, for the deadlines.
        code_sources: What the code snapshot holds (see
            :func:`~tasks.compute.azureml.spec.stage_code`); the ``gpu/`` package by default.
    """

    name = "azureml"

    def __init__(
        self,
        settings: RestyleSettings,
        logger: Logger | None = None,
        *,
        ml_client: MLClient | None = None,
        storage: JobFolderStorage | None = None,
        clock: Callable[[], float] = time.monotonic,
        code_sources: dict[str, Path] | None = None,
    ) -> None:
        self.settings = settings.azureml
        self.compute = settings.compute
        self.code_root = settings.work_dir / "azureml-code"
        self.logger = logger or logging.getLogger(__name__)
        self.clock = clock
        self.code_sources = code_sources
        credential = None
        if ml_client is None or storage is None:
            credential = clients.make_credential(self.settings)
        self.ml_client = ml_client or clients.make_ml_client(self.settings, credential)
        self.storage = storage or BlobJobStorage.from_settings(self.settings, credential)
        self._stop = threading.Event()
        self._active: set[str] = set()
        self._active_lock = threading.Lock()
        self._checked_code_datastore = False

    def cancel_active(self) -> None:
        """Cancel every job this backend is waiting on; ``run`` in another thread then stops
        polling and raises :class:`GpuJobError`."""
        self._stop.set()
        with self._active_lock:
            names = list(self._active)
        for name in names:
            self._cancel(name)

    def run(self, job: GpuJob, on_progress: ProgressCallback | None = None) -> GpuJobResult:
        """Upload the input, submit, wait (resubmitting after preemption), download the output.

        Raises:
            GpuJobError: The job failed (``retryable`` when the last failure was a preemption
                and attempts ran out), was canceled, missed a deadline or could not be submitted.
        """
        started = self.clock()
        self._check_code_datastore()
        key = job_key(job)
        paths = JobPaths.for_job(self.settings, key)
        sent = self.storage.upload_folder(job.input_dir, paths.input_prefix)
        if job.output_dir.exists():  # finished chunks of an earlier local run count too
            sent += self.storage.upload_folder(job.output_dir, paths.output_prefix)
        self.logger.info("Azure ML job folder %s: %d file(s) uploaded", paths.prefix, sent)
        ranks = self.settings.instance_count * self.settings.gpus_per_node
        if ranks != job.ranks:
            self.logger.info(
                "Azure ML runs %d rank(s) (%d node(s) x %d GPU(s)); the job asked for %d",
                ranks, self.settings.instance_count, self.settings.gpus_per_node, job.ranks,
            )
        code_dir = stage_code(self.code_root, self.code_sources)
        environment = resolve_environment(self.settings)
        links: dict[str, str] = {}
        retry_reasons: list[str] = []
        attempt = 0
        while True:
            attempt += 1
            job_name = f"{key}-a{attempt}-{secrets.token_hex(3)}"
            spec = build_command_job(
                job, self.settings, paths=paths, job_name=job_name, code_dir=code_dir,
                environment=environment, attempt=attempt,
            )
            status, logs = self._submit_and_wait(spec, job, paths, on_progress, links)
            if status == "Completed":
                break
            self._fail_unless_retryable(job_name, status, logs, attempt, retry_reasons)
        self._sync_output(paths, job.output_dir)
        if on_progress:
            self._report_progress(paths, job, on_progress)
        if not self.settings.keep_job_folders:
            deleted = self.storage.delete_folder(paths.prefix)
            self.logger.info("Deleted the job folder %s (%d file(s))", paths.prefix, deleted)
        reused, mpi_library = summary_facts(job.output_dir)
        return GpuJobResult(
            backend=self.name, seconds=self.clock() - started, attempts=attempt,
            reused_chunks=reused, retry_reasons=retry_reasons, log_tail=logs.tail(), links=links,
            mpi_library=mpi_library,
        )

    def _fail_unless_retryable(
        self, job_name: str, status: str, logs: JobLogs, attempt: int, retry_reasons: list[str]
    ) -> None:
        """Raise :class:`GpuJobError` for a failed attempt, unless it is retried: then wait the
        backoff and record why."""
        if status == "Canceled":
            raise GpuJobError(f"Azure ML job {job_name} was canceled", logs.tail())
        no_cuda = cuda_failure(logs.text)
        if no_cuda:
            raise GpuJobError(
                f"Azure ML job {job_name} stopped because CUDA is not usable on its node "
                f"(the job never falls back to the CPU): {no_cuda}. Check that the image's torch "
                "CUDA build suits the node's driver (deployments/azureml/image); "
                "`make azure-smoke` checks it.",
                logs.tail(),
            )
        reason = logs.error or f"job ended in state {status}"
        retryable = is_preemption(reason)
        if retryable and attempt < self.compute.gpu_attempts:
            retry_reasons.append(f"attempt {attempt} ({job_name}): {reason}")
            delay = backoff_seconds(self.compute.retry_backoff_seconds, attempt)
            self.logger.warning(
                "Azure ML job %s was preempted; resubmitting in %.0f s (attempt %d of %d): %s",
                job_name, delay, attempt + 1, self.compute.gpu_attempts, reason,
            )
            if self._stop.wait(delay):
                raise GpuJobError("Azure ML job canceled while waiting to resubmit")
            return
        tried = f" after {attempt} attempt(s)" if attempt > 1 else ""
        raise GpuJobError(
            f"Azure ML job {job_name} {status.lower()}{tried}: {reason}", logs.tail(),
            retryable=retryable,
        )

    def _submit_and_wait(
        self,
        spec: Command,
        job: GpuJob,
        paths: JobPaths,
        on_progress: ProgressCallback | None,
        links: dict[str, str],
    ) -> tuple[str, JobLogs]:
        """Submit one attempt and poll it to a terminal state: (status, its logs)."""
        try:
            submitted = self.ml_client.jobs.create_or_update(spec)
        except (ServiceRequestError, ServiceResponseError) as exc:
            raise GpuJobError(
                f"could not reach Azure ML to submit {spec.name}: {redact(str(exc))}",
                retryable=True,
            ) from None
        except Exception as exc:  # validation, quota, permissions: retrying will not help
            raise GpuJobError(f"Azure ML refused job {spec.name}: {redact(str(exc))}") from None
        name = submitted.name
        if submitted.studio_url:
            links["azureml-studio"] = submitted.studio_url
        self.logger.info("Submitted Azure ML job %s: %s", name, submitted.studio_url or "(no URL)")
        with self._active_lock:
            self._active.add(name)
        try:
            status = self._poll(name, job, paths, on_progress)
        except DeadlineExpired as exc:
            self._cancel(name)
            exc.log_tail = self._logs_after_cancel(name).tail()
            raise
        except BaseException:
            # KeyboardInterrupt, Prefect's cancellation/termination, losing track of the job:
            # whatever stops us waiting must not leave GPUs billing in the cloud.
            self._cancel(name)
            raise
        finally:
            with self._active_lock:
                self._active.discard(name)
        logs = read_job_logs(self.ml_client.jobs, name)
        for label, text in logs.processes:
            for line in text.splitlines():
                if line.strip():
                    self.logger.info("[%s %s] %s", name, label, line)
        if logs.problem:
            self.logger.warning("Could not download the logs of %s: %s", name, logs.problem)
        return status, logs

    def _poll(
        self, name: str, job: GpuJob, paths: JobPaths, on_progress: ProgressCallback | None
    ) -> str:
        """Poll job ``name`` to a terminal state and return it.

        Raises:
            DeadlineExpired: It did not start, or did not finish, in time.
            GpuJobError: Polling failed for good, or :meth:`cancel_active` was called.
        """
        submitted = self.clock()
        running_since: float | None = None
        last = None
        failures = 0
        while True:
            try:
                status = self.ml_client.jobs.get(name).status or "Unknown"
                failures = 0
            except (ServiceRequestError, ServiceResponseError, HttpResponseError) as exc:
                failures += 1
                self._poll_failed(name, exc, failures)
                continue
            if status != last:
                self.logger.info("Azure ML job %s: %s", name, status)
                last = status
            if status in TERMINAL_STATUSES:
                return status
            now = self.clock()
            if status in WAITING_STATUSES and running_since is None:
                self._check_deadline(name, status, now - submitted, queued=True)
            else:
                running_since = now if running_since is None else running_since
                self._check_deadline(name, status, now - running_since, queued=False)
            if on_progress:
                self._report_progress(paths, job, on_progress)
            if self._stop.wait(self.settings.poll_seconds):
                raise GpuJobError(f"Azure ML job {name} canceled by the caller")

    def _check_deadline(self, name: str, status: str, seconds: float, *, queued: bool) -> None:
        minutes = seconds / 60
        if queued and minutes > self.settings.queue_timeout_minutes:
            raise DeadlineExpired(
                f"Azure ML job {name} was still {status} after {minutes:.0f} min without "
                f"starting (azureml.queue_timeout_minutes is "
                f"{self.settings.queue_timeout_minutes:g}), so it was canceled. The cluster "
                f"{self.settings.compute!r} most likely could not get nodes: check its "
                "low-priority (or dedicated) core quota in the region, or a failing image build "
                "in the job's Studio page."
            )
        if not queued and minutes > self.settings.run_timeout_minutes:
            raise DeadlineExpired(
                f"Azure ML job {name} ran for {minutes:.0f} min, past "
                f"azureml.run_timeout_minutes ({self.settings.run_timeout_minutes:g}), so it "
                "was canceled. Raise the limit for long videos, or see the log tail for a hang."
            )

    def _poll_failed(self, name: str, exc: Exception, failures: int) -> None:
        """Wait after a failed poll, or raise when it cannot be a passing problem."""
        # A network blip or a 5xx/429 must not cancel a healthy GPU job.
        code = exc.status_code if isinstance(exc, HttpResponseError) else None
        transient = not isinstance(exc, HttpResponseError) or (
            code is not None and (code >= 500 or code in (408, 429))
        )
        if not transient or failures > MAX_POLL_FAILURES:
            raise GpuJobError(
                f"lost track of Azure ML job {name}: {redact(str(exc))}", retryable=transient
            ) from None
        self.logger.warning(
            "Polling Azure ML job %s failed (%d in a row), retrying: %s",
            name, failures, redact(str(exc)),
        )
        if self._stop.wait(self.settings.poll_seconds):
            raise GpuJobError(f"Azure ML job {name} canceled by the caller") from None

    def _logs_after_cancel(self, name: str) -> JobLogs:
        """The logs of a job just canceled, once it has stopped; none if it takes too long."""
        for _ in range(CANCEL_WAIT_POLLS):
            try:
                if self.ml_client.jobs.get(name).status in TERMINAL_STATUSES:
                    return read_job_logs(self.ml_client.jobs, name)
            except Exception as exc:  # the deadline's message matters more than the logs
                return JobLogs([], problem=redact(str(exc)))
            time.sleep(self.settings.poll_seconds)
        return JobLogs([], problem="the canceled job had not stopped yet")

    def _report_progress(self, paths: JobPaths, job: GpuJob, on_progress: ProgressCallback) -> None:
        """Mirror the done reports (progress is read from the local output folder), then report.

        Progress is cosmetic: a storage hiccup or a failing progress artifact is logged, never
        allowed to cancel the GPU job. Interrupts (``BaseException``) still propagate.
        """
        try:
            self._sync_output(paths, job.output_dir, only_reports=True)
            on_progress()
        except Exception as exc:
            self.logger.warning("Progress update failed (job continues): %s", redact(str(exc)))

    def _sync_output(self, paths: JobPaths, output_dir: Path, only_reports: bool = False) -> None:
        from gpu.jobdir import DONE_DIR

        if only_reports:
            prefix = f"{paths.output_prefix}/{DONE_DIR}"
            self.storage.download_folder(prefix, output_dir / DONE_DIR)
        else:
            fetched = self.storage.download_folder(paths.output_prefix, output_dir)
            self.logger.info("Downloaded %d output file(s) from %s", fetched, paths.output_prefix)

    def _cancel(self, name: str) -> None:
        cancel_job(self.ml_client, name, self.logger)

    def _check_code_datastore(self) -> None:
        """Warn once when code snapshots would land in an unexpected (data) datastore."""
        if self._checked_code_datastore:
            return
        self._checked_code_datastore = True
        try:
            default = self.ml_client.datastores.get_default().name
        except Exception as exc:  # a missing permission must not block the job
            self.logger.warning("Could not read the default datastore: %s", redact(str(exc)))
            return
        if default != self.settings.code_datastore:
            self.logger.warning(
                "Workspace default datastore is %r, expected %r: code snapshots go there",
                default, self.settings.code_datastore,
            )


def cancel_job(ml_client: MLClient, name: str, logger: Logger) -> None:
    """Ask Azure ML to cancel job ``name``; best effort, a failure is logged."""
    try:
        ml_client.jobs.begin_cancel(name)
        logger.warning("Requested cancellation of Azure ML job %s", name)
    except Exception as exc:  # cancelling is best effort; the cause matters more
        logger.error("Could not cancel Azure ML job %s: %s", name, redact(str(exc)))


RECENT_JOBS_SCANNED = 500
"""Jobs (newest first) searched for a flow run's jobs: a run's jobs are among the latest."""


def cancel_flow_run_jobs(ml_client: MLClient, flow_run_id: str, logger: Logger) -> list[str]:
    """Cancel the unfinished Azure ML jobs tagged with ``flow_run_id``; returns their names.

    For a flow run that was cancelled or crashed, possibly in another process than the one
    that submitted them (a killed flow-run process cannot cancel its own jobs).
    """
    names = []
    jobs: Iterable[Any] = ml_client.jobs.list()
    for scanned, entity in enumerate(jobs):
        if scanned >= RECENT_JOBS_SCANNED:
            break
        tags = entity.tags or {}
        if tags.get(FLOW_RUN_TAG) == flow_run_id and entity.status not in TERMINAL_STATUSES:
            cancel_job(ml_client, entity.name, logger)
            names.append(entity.name)
    return names
