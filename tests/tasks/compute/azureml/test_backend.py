"""AzureMLBackend against the shared fake control plane and a real blob store (Azurite).

Only Azure ML's job service is faked (:mod:`tests.fakes.azureml`, with its chunk-writing node).
Everything else - upload, stable output folder, polling, deadlines, progress mirroring, log
download, failure classification, resubmission, cancellation, download, cleanup - is the real
backend code over the real azure-storage-blob client.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path

import pytest
from azure.core.exceptions import HttpResponseError, ServiceRequestError
from azure.storage.blob import ContainerClient

from gpu.jobdir import (
    DONE_DIR,
    ChunkReport,
    ChunkSpec,
    JobManifest,
    atomic_write_bytes,
    is_chunk_done,
    read_reports,
    write_manifest,
)
from tasks.compute.azureml.backend import AzureMLBackend, DeadlineExpired
from tasks.compute.azureml.folders import BlobJobStorage
from tasks.compute.azureml.spec import job_key
from tasks.compute.base import GpuJob, GpuJobError
from tasks.settings import RestyleSettings
from tests.azurite import AZURITE_KEY, blob_service, container, needs_azurite
from tests.fakes.azureml import DATASTORE, LEAKY_URL, FakeJobs, FakeMLClient, Script
from tests.tasks.test_storage_links import _DelegationService

# Names other test modules import from here.
__all__ = ["AZURITE_KEY", "LEAKY_LOG", "Script", "_DelegationService", "blob_service",
           "container", "make_backend", "make_job"]

LEAKY_LOG = f"fetching {LEAKY_URL}"
"""A log line of a leaky job: the backend must not pass its signature on."""

pytestmark = needs_azurite


def make_job(tmp_path: Path, chunks: int = 3) -> GpuJob:
    input_dir = tmp_path / "in"
    specs = [ChunkSpec(i, f"chunks/{i:05d}.mkv", 5, 5 * i) for i in range(chunks)]
    for spec in specs:
        atomic_write_bytes(input_dir / spec.file, f"chunk {spec.index} bytes".encode() * 50)
    atomic_write_bytes(input_dir / "model.safetensors", b"weights")
    write_manifest(input_dir, JobManifest(64, 48, 5 * chunks, specs))
    return GpuJob(
        module="gpu.stylize", input_dir=input_dir, output_dir=tmp_path / "out", name="clip.mp4"
    )


class SteppingClock:
    """A clock that moves ``step`` seconds each time it is read: deadlines without waiting."""

    def __init__(self, step: float) -> None:
        self.now, self.step = 0.0, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def make_backend(
    tmp_path: Path, container: ContainerClient, scripts: list[Script], logger: logging.Logger,
    clock: SteppingClock | None = None, **azureml: object,
) -> tuple[AzureMLBackend, FakeMLClient]:
    settings = RestyleSettings(
        work_dir=tmp_path / "work",
        compute={"gpu_attempts": 3, "retry_backoff_seconds": 0.01},
        azureml={
            "subscription_id": "sub", "resource_group": "rg", "workspace": "ws",
            "data_datastore": DATASTORE, "poll_seconds": 0.01, **azureml,
        },
    )
    client = FakeMLClient(container, scripts, default_datastore="other")
    backend = AzureMLBackend(
        settings, logger, ml_client=client, storage=BlobJobStorage(container),
        **({"clock": clock} if clock else {}),
    )
    return backend, client


@pytest.fixture
def logger(caplog: pytest.LogCaptureFixture) -> logging.Logger:
    caplog.set_level(logging.INFO, logger="test.azureml")
    return logging.getLogger("test.azureml")


def test_completes_downloads_every_chunk_and_deletes_the_job_folder(
    tmp_path: Path, container: ContainerClient, logger: logging.Logger,
    caplog: pytest.LogCaptureFixture,
) -> None:
    job = make_job(tmp_path)
    backend, client = make_backend(tmp_path, container, [Script("complete")], logger)
    progress_reports: list[int] = []

    result = backend.run(job, lambda: progress_reports.append(len(read_reports(job.output_dir))))

    manifest = JobManifest.from_json(json.loads((job.input_dir / "job.json").read_text()))
    assert all(is_chunk_done(job.output_dir, c) for c in manifest.chunks)
    first = (job.input_dir / "chunks/00000.mkv").read_bytes()
    assert (job.output_dir / "chunks/00000.mkv").read_bytes() == first[::-1]
    assert result.backend == "azureml" and result.attempts == 1 and result.retry_reasons == []
    assert result.reused_chunks == 0 and result.mpi_library == "Open MPI v5.0.6 (fake node)"
    (sub,) = client.jobs.submitted
    assert result.links == {"azureml-studio": FakeJobs.studio_url(sub.name)}
    # Progress followed the chunks as they finished remotely, not only at the end.
    assert progress_reports[0] < 3 and progress_reports[-1] == 3
    assert progress_reports == sorted(progress_reports)
    # The logs come from jobs.download (stream prints only a header), per rank, masked.
    assert "[rank 0] processed chunks [0, 1, 2]" in result.log_tail
    assert "[rank 1] rank 1 had nothing to say" in result.log_tail
    assert "sig=***" in caplog.text and "SECRETSIGNATURE" not in caplog.text
    assert "Workspace default datastore is 'other'" in caplog.text
    props = sub.rest.properties
    assert props.resources.instance_count == 1
    assert props.inputs["input"].mode == "ReadOnlyMount"
    assert props.outputs["output"].mode == "ReadWriteMount"
    assert "--device cuda" in props.command  # never a silent fall-back to the CPU
    assert not list(container.list_blobs(name_starts_with=f"restyle-jobs/{job_key(job)}/"))


def test_keep_job_folders_keeps_them_after_success(
    tmp_path: Path, container: ContainerClient, logger: logging.Logger
) -> None:
    job = make_job(tmp_path)
    backend, _ = make_backend(tmp_path, container, [Script("complete")], logger,
                              keep_job_folders=True)
    backend.run(job)
    names = {b.name for b in container.list_blobs(name_starts_with="restyle-jobs/")}
    assert f"restyle-jobs/{job_key(job)}/output/{DONE_DIR}/00002.json" in names


def test_preemption_is_resubmitted_and_resumes_from_finished_chunks(
    tmp_path: Path, container: ContainerClient, logger: logging.Logger
) -> None:
    job = make_job(tmp_path, chunks=4)
    scripts = [Script("preempt", chunks=1), Script("preempt", chunks=1), Script("complete")]
    backend, client = make_backend(tmp_path, container, scripts, logger)

    result = backend.run(job)

    first, second, third = client.jobs.submitted
    assert result.attempts == 3 and result.reused_chunks == 2
    assert len(result.retry_reasons) == 2 and "PreemptionError" in result.retry_reasons[0]
    assert "sig=***" in result.retry_reasons[0]  # the service's text, masked on the way
    assert first.name in result.retry_reasons[0] and second.name in result.retry_reasons[1]
    # Each attempt has its own Azure ML name but mounts the same output folder ...
    assert len({first.name, second.name, third.name}) == 3
    assert first.output_prefix == second.output_prefix == third.output_prefix
    assert first.output_prefix.endswith(f"{job_key(job)}/output")
    # ... so later attempts redo nothing that an earlier one finished.
    assert (first.processed, second.processed, third.processed) == ([0], [1], [2, 3])
    assert third.pending_at_start == ["00002", "00003"]
    assert len(read_reports(job.output_dir)) == 4
    assert result.links["azureml-studio"] == FakeJobs.studio_url(third.name)


def test_other_failures_fail_fast_with_the_job_error_and_log_tail(
    tmp_path: Path, container: ContainerClient, logger: logging.Logger
) -> None:
    job = make_job(tmp_path)
    backend, client = make_backend(
        tmp_path, container, [Script("fail", chunks=1), Script("complete")], logger
    )

    with pytest.raises(GpuJobError) as caught:
        backend.run(job)

    assert len(client.jobs.submitted) == 1
    assert caught.value.retryable is False
    assert "CUDA error: out of memory" in str(caught.value)
    assert "[rank 0] processed chunks [0]" in caught.value.log_tail
    assert "SECRETSIGNATURE" not in str(caught.value) + caught.value.log_tail
    # A failed job's folder stays, so a rerun resumes from its finished chunks.
    assert list(container.list_blobs(name_starts_with=f"restyle-jobs/{job_key(job)}/output/"))


def test_missing_cuda_fails_fast_saying_so(
    tmp_path: Path, container: ContainerClient, logger: logging.Logger
) -> None:
    job = make_job(tmp_path)
    backend, client = make_backend(
        tmp_path, container, [Script("no-cuda"), Script("complete")], logger
    )

    with pytest.raises(GpuJobError) as caught:
        backend.run(job)

    message = str(caught.value)
    assert len(client.jobs.submitted) == 1 and caught.value.retryable is False
    assert "CUDA is not usable on its node" in message
    assert "no CUDA device is available on this node" in message
    assert "NVIDIA driver on your system is too old" in caught.value.log_tail


def test_preemption_after_last_attempt_is_reported_retryable(
    tmp_path: Path, container: ContainerClient, logger: logging.Logger
) -> None:
    job = make_job(tmp_path, chunks=5)
    backend, client = make_backend(
        tmp_path, container, [Script("preempt", chunks=1) for _ in range(3)], logger
    )

    with pytest.raises(GpuJobError) as caught:
        backend.run(job)

    assert len(client.jobs.submitted) == 3
    assert caught.value.retryable is True
    assert "after 3 attempt(s)" in str(caught.value)


def test_a_job_that_never_starts_is_canceled_at_the_queue_deadline(
    tmp_path: Path, container: ContainerClient, logger: logging.Logger
) -> None:
    job = make_job(tmp_path)
    backend, client = make_backend(
        tmp_path, container, [Script("stuck-queued")], logger, clock=SteppingClock(60.0),
        queue_timeout_minutes=5,
    )

    with pytest.raises(DeadlineExpired) as caught:
        backend.run(job)

    (sub,) = client.jobs.submitted
    assert client.jobs.cancelled == [sub.name] and sub.status == "Canceled"
    message = str(caught.value)
    assert "was still Queued" in message and "queue_timeout_minutes is 5" in message
    assert "quota" in message and caught.value.retryable is False


def test_a_job_running_past_its_deadline_is_canceled(
    tmp_path: Path, container: ContainerClient, logger: logging.Logger
) -> None:
    job = make_job(tmp_path)
    backend, client = make_backend(
        tmp_path, container, [Script("hang")], logger, clock=SteppingClock(60.0),
        run_timeout_minutes=10, queue_timeout_minutes=60,
    )

    with pytest.raises(DeadlineExpired, match="past azureml.run_timeout_minutes") as caught:
        backend.run(job)

    (sub,) = client.jobs.submitted
    assert client.jobs.cancelled == [sub.name] and sub.status == "Canceled"
    assert caught.value.retryable is False
    # Azure ML gets a limit of its own, for when the Prefect side is gone.
    assert sub.rest.properties.limits.timeout.total_seconds() >= 10 * 60


def test_logs_that_cannot_be_downloaded_do_not_hide_the_failure(
    tmp_path: Path, container: ContainerClient, logger: logging.Logger,
    caplog: pytest.LogCaptureFixture,
) -> None:
    job = make_job(tmp_path)
    backend, client = make_backend(tmp_path, container, [Script("fail", chunks=1)], logger)
    client.jobs.download_error = HttpResponseError("AuthorizationPermissionMismatch")

    with pytest.raises(GpuJobError, match="CUDA error: out of memory") as caught:
        backend.run(job)

    assert "logs unavailable: HttpResponseError: AuthorizationPermissionMismatch" in (
        caught.value.log_tail)
    assert "Could not download the logs" in caplog.text


def test_interrupt_while_waiting_cancels_the_remote_job(
    tmp_path: Path, container: ContainerClient, logger: logging.Logger
) -> None:
    job = make_job(tmp_path)
    backend, client = make_backend(tmp_path, container, [Script("hang")], logger)
    calls = []

    def interrupted_progress() -> None:
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        backend.run(job, interrupted_progress)

    name = client.jobs.submitted[0].name
    assert client.jobs.cancelled == [name]
    assert client.jobs.get(name).status == "Canceled"


def test_failing_progress_updates_do_not_stop_the_job(
    tmp_path: Path, container: ContainerClient, logger: logging.Logger
) -> None:
    job = make_job(tmp_path)
    backend, client = make_backend(tmp_path, container, [Script("complete")], logger)

    def broken_progress() -> None:
        raise RuntimeError("progress artifact API unavailable")

    result = backend.run(job, broken_progress)

    assert result.attempts == 1 and len(read_reports(job.output_dir)) == 3
    assert client.jobs.cancelled == [] and client.jobs.submitted[0].status == "Completed"


def test_cancel_active_from_another_thread_stops_the_run(
    tmp_path: Path, container: ContainerClient, logger: logging.Logger
) -> None:
    job = make_job(tmp_path)
    backend, client = make_backend(tmp_path, container, [Script("hang")], logger)
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            backend.run(job)
        except BaseException as exc:  # collected for the assertion below
            outcome.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    deadline = time.monotonic() + 20
    while not client.jobs.submitted or client.jobs.submitted[0].status != "Running":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    backend.cancel_active()
    worker.join(timeout=20)

    assert isinstance(outcome[0], GpuJobError) and "canceled" in str(outcome[0])
    assert client.jobs.cancelled[0] == client.jobs.submitted[0].name


def test_job_canceled_in_studio_is_not_retried(
    tmp_path: Path, container: ContainerClient, logger: logging.Logger
) -> None:
    job = make_job(tmp_path)
    backend, client = make_backend(
        tmp_path, container, [Script("canceled-remotely"), Script("complete")], logger
    )

    with pytest.raises(GpuJobError, match="was canceled") as caught:
        backend.run(job)

    assert caught.value.retryable is False and len(client.jobs.submitted) == 1


def test_local_partial_output_is_uploaded_and_not_redone(
    tmp_path: Path, container: ContainerClient, logger: logging.Logger
) -> None:
    job = make_job(tmp_path)
    backend, client = make_backend(tmp_path, container, [Script("complete")], logger)
    report = ChunkReport(0, 0, "laptop", 5, 0.1, "cpu").__dict__
    atomic_write_bytes(job.output_dir / "chunks/00000.mkv", b"done locally")
    atomic_write_bytes(job.output_dir / DONE_DIR / "00000.json", json.dumps(report).encode())

    result = backend.run(job)

    assert client.jobs.submitted[0].processed == [1, 2] and result.reused_chunks == 1
    assert (job.output_dir / "chunks/00000.mkv").read_bytes() == b"done locally"


def test_transient_poll_failures_do_not_cancel_the_job(
    tmp_path: Path, container: ContainerClient, logger: logging.Logger,
    caplog: pytest.LogCaptureFixture,
) -> None:
    job = make_job(tmp_path)
    backend, client = make_backend(tmp_path, container, [Script("complete")], logger)
    throttled = HttpResponseError("Too many requests")
    throttled.status_code = 429
    client.jobs.failing_gets = [ServiceRequestError("connection reset"), throttled]

    result = backend.run(job)

    assert result.attempts == 1 and client.jobs.cancelled == []
    assert caplog.text.count("failed (") == 2


def test_persistent_poll_failure_cancels_and_reports(
    tmp_path: Path, container: ContainerClient, logger: logging.Logger
) -> None:
    job = make_job(tmp_path)
    backend, client = make_backend(tmp_path, container, [Script("hang")], logger)
    forbidden = HttpResponseError("AuthorizationFailed")
    forbidden.status_code = 403
    client.jobs.failing_gets = [forbidden]

    with pytest.raises(GpuJobError, match="lost track") as caught:
        backend.run(job)

    assert caught.value.retryable is False
    assert client.jobs.cancelled == [client.jobs.submitted[0].name]


def test_refused_submission_is_a_clear_non_retryable_error(
    tmp_path: Path, container: ContainerClient, logger: logging.Logger
) -> None:
    job = make_job(tmp_path)
    backend, client = make_backend(tmp_path, container, [Script("complete")], logger)
    client.jobs.refusal = HttpResponseError("QuotaExceeded: low priority cores quota is 0")

    with pytest.raises(GpuJobError, match="refused.*QuotaExceeded") as caught:
        backend.run(job)

    assert caught.value.retryable is False and client.jobs.submitted == []


def test_backend_without_workspace_coordinates_says_what_to_set(tmp_path: Path) -> None:
    settings = RestyleSettings(work_dir=tmp_path)
    with pytest.raises(GpuJobError, match="RESTYLE_AZUREML__SUBSCRIPTION_ID"):
        AzureMLBackend(settings)


@pytest.mark.stack
def test_through_the_prefect_gpu_task_logs_reach_prefect_without_secrets(
    stack_settings: RestyleSettings,
    tmp_path: Path,
    container: ContainerClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The flow's real ``run-gpu-job`` task on the azureml backend, against the stack's Prefect."""
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogHandler

    from tasks.compute.azureml import client as clients
    from tasks.compute.run import run_gpu_job
    from tasks.settings import AzureMLSettings, ComputeSettings

    client = FakeMLClient(container, [Script("preempt", chunks=1), Script("complete")])
    # Only the remote control plane is replaced; backend construction runs as in production.
    monkeypatch.setattr(clients, "make_credential", lambda settings: object())
    monkeypatch.setattr(clients, "make_ml_client", lambda settings, credential: client)
    monkeypatch.setattr(
        BlobJobStorage, "from_settings", classmethod(lambda cls, s, c: cls(container))
    )
    settings = stack_settings.model_copy(
        update={
            "compute": ComputeSettings(backend="azureml", retry_backoff_seconds=0.01),
            "azureml": AzureMLSettings(
                subscription_id="sub", resource_group="rg", workspace="ws",
                data_datastore=DATASTORE, poll_seconds=0.05,
            ),
            "work_dir": tmp_path / "work",
        }
    )
    job = make_job(tmp_path, chunks=3)

    @flow(name="azureml-backend-check")
    def gpu_on_azureml() -> object:
        return run_gpu_job(job, settings, 3)

    state = gpu_on_azureml(return_state=True)
    result = state.result()
    APILogHandler().flush()  # logs ship in the background; wait for them

    assert result.attempts == 2 and "PreemptionError" in result.retry_reasons[0]
    assert [s.processed for s in client.jobs.submitted] == [[0], [1, 2]]
    flow_run_id = str(state.state_details.flow_run_id)
    assert all(s.entity.tags["restyle.flow_run_id"] == flow_run_id for s in client.jobs.submitted)
    with get_client(sync_client=True) as prefect:
        logs = prefect.read_logs(
            LogFilter(flow_run_id=LogFilterFlowRunId(any_=[state.state_details.flow_run_id]))
        )
    text = "\n".join(log.message for log in logs)
    assert "was preempted; resubmitting" in text and "processed chunks [1, 2]" in text
    assert "SECRETSIGNATURE" not in text and "sig=***" in text
    assert AZURITE_KEY not in text


@pytest.mark.slow
def test_the_real_job_resumes_on_a_resubmitted_node(
    tmp_path: Path, container: ContainerClient, logger: logging.Logger,
    tmp_path_factory: pytest.TempPathFactory, tiny_model_path: Path,
) -> None:
    """The fake's CommandNode runs the submitted ``python -m gpu.stylize`` for real (CPU for
    GPU): preempted after two chunks, the resubmission mounts the same output and does the rest."""
    from tests.fakes.azureml import CommandNode
    from tests.tasks.compute.test_local import make_job_folder

    manifest = make_job_folder(tmp_path / "in", tiny_model_path, chunks=4, frames=2)
    job = GpuJob("gpu.stylize", tmp_path / "in", tmp_path / "out", ranks=2, name="real",
                 args=("--device", "cpu", "--threads", "1", "--batch-size", "2"))
    backend, client = make_backend(
        tmp_path, container, [Script("preempt", chunks=2), Script("complete")], logger,
        gpus_per_node=2, poll_seconds=0.2,
    )
    client.jobs.node = CommandNode(container, tmp_path_factory.mktemp("nodes"))

    result = backend.run(job)

    first, second = client.jobs.submitted
    assert result.attempts == 2 and "PreemptionError" in result.retry_reasons[0]
    assert first.ranks == second.ranks == 2
    assert first.pending_at_start == ["00000", "00001", "00002", "00003"]
    assert len(first.chunks_written) >= 2 and second.chunks_written == second.pending_at_start
    assert set(first.chunks_written).isdisjoint(second.chunks_written)
    assert result.reused_chunks == len(first.chunks_written)
    assert all(is_chunk_done(job.output_dir, c) for c in manifest.chunks)
