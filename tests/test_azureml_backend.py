"""AzureMLBackend against a fake Azure ML control plane and a real blob store (Azurite).

Only the workspace's job service is faked (:class:`FakeMLClient`): it accepts the real
``Command`` entity the backend builds, serializes it as the SDK would, and walks Azure's job
state machine (Queued -> Running -> Completed / Failed / Canceled). While "Running" it does what
the GPU job does on its ``rw_mount``: for every chunk of the manifest that is not yet done in
the output folder it writes the stylized chunk and then its done report, straight into the
Azurite container behind the datastore. Everything else - upload, stable output folder, polling,
progress mirroring, log collection, failure classification, resubmission, cancellation,
download - is the real backend code over the real azure-storage-blob client.
"""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from azure.ai.ml.entities import Command, JobService
from azure.ai.ml.exceptions import ErrorCategory, ErrorTarget, JobException
from azure.core.exceptions import HttpResponseError, ServiceRequestError
from azure.storage.blob import BlobServiceClient, ContainerClient, UserDelegationKey

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
from tasks.azureml import (
    AzureMLBackend,
    BlobJobStorage,
    job_key,
    sign_blob_read_url,
    user_delegation_read_url,
)
from tasks.dispatch import GpuJob, GpuJobError
from tasks.settings import RestyleSettings

REPO = Path(__file__).resolve().parent.parent
AZURITE = REPO / "node_modules" / ".bin" / "azurite-blob"
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
DATASTORE = "restyle_jobs"
PREEMPTION_ERROR = (
    '{"code": "ServiceError", "message": "PreemptionError: the low-priority node running the '
    'job was preempted", "details": []}'
)
USER_ERROR = (
    '{"code": "UserError", "message": "Execution failed. User process \'python\' exited with '
    'status code 1: RuntimeError: CUDA error: out of memory"}'
)
# A log line as a leaky job might print it: the backend must not pass the signature on.
LEAKY_LOG = "fetching https://acct.blob.core.windows.net/c/x?sv=2025-01-05&sig=SECRETSIGNATURE%3D"

pytestmark = pytest.mark.skipif(not AZURITE.exists(), reason="Azurite not installed (npm ci)")


# --------------------------------------------------------------------------- Azurite


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def blob_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BlobServiceClient]:
    port = _free_port()
    location = tmp_path_factory.mktemp("azurite")
    proc = subprocess.Popen(
        [str(AZURITE), "--blobHost", "127.0.0.1", "--blobPort", str(port), "--location",
         str(location), "--silent", "--skipApiVersionCheck", "--loose", "--disableTelemetry"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail("Azurite did not start")
            time.sleep(0.1)
    conn = (
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
        f"AccountKey={AZURITE_KEY};BlobEndpoint=http://127.0.0.1:{port}/devstoreaccount1;"
    )
    try:
        yield BlobServiceClient.from_connection_string(conn)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def container(blob_service: BlobServiceClient, request: pytest.FixtureRequest) -> ContainerClient:
    name = "jobs-" + request.node.name.lower().replace("_", "-")[:40].strip("-")
    client = blob_service.get_container_client(name)
    client.create_container()
    return client


# --------------------------------------------------------------------------- fake control plane


@dataclass
class Script:
    """What one submission does: finish, or fail after ``chunks`` chunks, or run until canceled."""

    outcome: str  # "complete" | "preempt" | "fail" | "hang" | "canceled-remotely"
    chunks: int = 10**6


@dataclass
class Submission:
    name: str
    script: Script
    input_prefix: str
    output_prefix: str
    rest: object
    status: str = "Queued"
    processed: list[int] = field(default_factory=list)
    error: str | None = None
    cancel_requested: bool = False


class FakeJobs:
    """``MLClient.jobs`` as far as the backend uses it, modelling Azure's job state machine."""

    def __init__(self, container: ContainerClient, scripts: list[Script]) -> None:
        self.container = container
        self.scripts = list(scripts)
        self.submissions: list[Submission] = []
        self.cancelled: list[str] = []
        self.failing_gets: list[Exception] = []  # raised by the next get() calls, in order
        self.refusal: Exception | None = None  # raised by create_or_update

    def _prefix(self, uri: str) -> str:
        head = f"azureml://datastores/{DATASTORE}/paths/"
        assert uri.startswith(head), uri
        return uri[len(head) :]

    def create_or_update(self, job: Command) -> object:
        assert isinstance(job, Command)
        if self.refusal:
            raise self.refusal
        command_job = job._to_job()
        rest = command_job._to_rest_object()  # what the SDK would PUT; fails on a bad entity
        props = rest.properties
        assert props.distribution.distribution_type == "Mpi"
        sub = Submission(
            name=job.name,
            script=self.scripts.pop(0),
            input_prefix=self._prefix(props.inputs["input"].uri),
            output_prefix=self._prefix(props.outputs["output"].uri),
            rest=rest,
        )
        self.submissions.append(sub)
        command_job._status = "Queued"
        command_job.services = {"Studio": JobService(endpoint=self.studio_url(job.name))}
        return command_job

    @staticmethod
    def studio_url(name: str) -> str:
        return f"https://ml.azure.com/runs/{name}?wsid=/subscriptions/sub/workspaces/ws"

    def _find(self, name: str) -> Submission:
        return next(s for s in self.submissions if s.name == name)

    def get(self, name: str) -> object:
        if self.failing_gets:
            raise self.failing_gets.pop(0)
        sub = self._find(name)
        self._advance(sub)
        return type("JobView", (), {"name": name, "status": sub.status})()

    def _advance(self, sub: Submission) -> None:
        if sub.status in {"Completed", "Failed", "Canceled"}:
            return
        if sub.cancel_requested:
            sub.status = "Canceled"
        elif sub.status == "Queued":
            sub.status = "Running"
        elif sub.script.outcome == "canceled-remotely":
            sub.status = "Canceled"
        elif sub.script.outcome == "hang":
            return
        elif len(sub.processed) >= sub.script.chunks:
            sub.status = "Failed"
            sub.error = PREEMPTION_ERROR if sub.script.outcome == "preempt" else USER_ERROR
        elif not self._do_one_chunk(sub):
            sub.status = "Completed"

    def _do_one_chunk(self, sub: Submission) -> bool:
        """Stylize the next chunk not yet done, as the GPU job does; False when none is left."""
        manifest = JobManifest.from_json(
            json.loads(self.container.download_blob(f"{sub.input_prefix}/job.json").readall())
        )
        done = {
            b.name for b in self.container.list_blobs(name_starts_with=f"{sub.output_prefix}/done/")
        }
        for chunk in manifest.chunks:
            report = f"{sub.output_prefix}/done/{chunk.stem}.json"
            if report in done:
                continue
            data = self.container.download_blob(f"{sub.input_prefix}/{chunk.file}").readall()
            self.container.upload_blob(
                f"{sub.output_prefix}/chunks/{chunk.stem}.mkv", data[::-1], overwrite=True
            )
            body = ChunkReport(chunk.index, 0, "node-0", chunk.frames, 0.01, "cuda:0").__dict__
            self.container.upload_blob(report, json.dumps(body), overwrite=True)
            sub.processed.append(chunk.index)
            return True
        return False

    def begin_cancel(self, name: str) -> None:
        self.cancelled.append(name)
        sub = self._find(name)
        if sub.status not in {"Completed", "Failed", "Canceled"}:
            sub.cancel_requested = True
            sub.status = "CancelRequested"

    def stream(self, name: str) -> None:
        """Like the SDK on a finished job: print the logs, raise the job's error if it failed."""
        sub = self._find(name)
        print(f"[rank 0] processed chunks {sub.processed}")
        print(LEAKY_LOG)
        if sub.status == "Failed":
            raise JobException(
                message=f"Exception : \n {sub.error} ",
                no_personal_data_message="job failed",
                target=ErrorTarget.JOB,
                error_category=ErrorCategory.SYSTEM_ERROR,
            )


class FakeMLClient:
    def __init__(self, container: ContainerClient, scripts: list[Script]) -> None:
        self.jobs = FakeJobs(container, scripts)
        self.datastores = type(
            "Datastores", (), {"get_default": lambda _self: type("D", (), {"name": "other"})()}
        )()


# --------------------------------------------------------------------------- helpers


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


def make_backend(
    tmp_path: Path, container: ContainerClient, scripts: list[Script], logger: logging.Logger
) -> tuple[AzureMLBackend, FakeMLClient]:
    settings = RestyleSettings(
        work_dir=tmp_path / "work",
        azureml={
            "subscription_id": "sub", "resource_group": "rg", "workspace": "ws",
            "data_datastore": DATASTORE, "poll_seconds": 0.01, "backoff_seconds": 0.01,
            "max_attempts": 3,
        },
    )
    client = FakeMLClient(container, scripts)
    backend = AzureMLBackend(
        settings, logger, ml_client=client, storage=BlobJobStorage(container)
    )
    return backend, client


@pytest.fixture
def logger(caplog: pytest.LogCaptureFixture) -> logging.Logger:
    caplog.set_level(logging.INFO, logger="test.azureml")
    return logging.getLogger("test.azureml")


# --------------------------------------------------------------------------- tests


def test_completes_and_downloads_every_chunk(
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
    sub = client.jobs.submissions[0]
    assert result.links == {"azureml-studio": FakeJobs.studio_url(sub.name)}
    # Progress followed the chunks as they finished remotely, not only at the end.
    assert progress_reports[0] < 3 and progress_reports[-1] == 3
    assert progress_reports == sorted(progress_reports)
    assert "processed chunks [0, 1, 2]" in result.log_tail
    assert "Workspace default datastore is 'other'" in caplog.text
    props = sub.rest.properties
    assert props.resources.instance_count == 1
    assert props.inputs["input"].mode == "ReadOnlyMount"
    assert props.outputs["output"].mode == "ReadWriteMount"


def test_preemption_is_resubmitted_and_resumes_from_finished_chunks(
    tmp_path: Path, container: ContainerClient, logger: logging.Logger
) -> None:
    job = make_job(tmp_path, chunks=4)
    scripts = [Script("preempt", chunks=1), Script("preempt", chunks=1), Script("complete")]
    backend, client = make_backend(tmp_path, container, scripts, logger)

    result = backend.run(job)

    first, second, third = client.jobs.submissions
    assert result.attempts == 3
    assert len(result.retry_reasons) == 2 and "PreemptionError" in result.retry_reasons[0]
    assert first.name in result.retry_reasons[0] and second.name in result.retry_reasons[1]
    # Each attempt has its own Azure ML name but mounts the same output folder ...
    assert len({first.name, second.name, third.name}) == 3
    assert first.output_prefix == second.output_prefix == third.output_prefix
    assert first.output_prefix.endswith(f"{job_key(job)}/output")
    # ... so later attempts redo nothing that an earlier one finished.
    assert (first.processed, second.processed, third.processed) == ([0], [1], [2, 3])
    assert len(read_reports(job.output_dir)) == 4
    assert result.links["azureml-studio"] == FakeJobs.studio_url(third.name)


def test_other_failures_fail_fast_with_the_job_error(
    tmp_path: Path, container: ContainerClient, logger: logging.Logger
) -> None:
    job = make_job(tmp_path)
    backend, client = make_backend(
        tmp_path, container, [Script("fail", chunks=1), Script("complete")], logger
    )

    with pytest.raises(GpuJobError) as caught:
        backend.run(job)

    assert len(client.jobs.submissions) == 1
    assert caught.value.retryable is False
    assert "CUDA error: out of memory" in str(caught.value)
    assert "processed chunks [0]" in caught.value.log_tail


def test_preemption_after_last_attempt_is_reported_retryable(
    tmp_path: Path, container: ContainerClient, logger: logging.Logger
) -> None:
    job = make_job(tmp_path, chunks=5)
    backend, client = make_backend(
        tmp_path, container, [Script("preempt", chunks=1)] * 3, logger
    )

    with pytest.raises(GpuJobError) as caught:
        backend.run(job)

    assert len(client.jobs.submissions) == 3
    assert caught.value.retryable is True
    assert "after 3 attempt(s)" in str(caught.value)


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

    name = client.jobs.submissions[0].name
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
    assert client.jobs.cancelled == [] and client.jobs.submissions[0].status == "Completed"


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
    while not client.jobs.submissions or client.jobs.submissions[0].status != "Running":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    backend.cancel_active()
    worker.join(timeout=20)

    assert isinstance(outcome[0], GpuJobError) and "canceled" in str(outcome[0])
    assert client.jobs.cancelled[0] == client.jobs.submissions[0].name


def test_job_canceled_in_studio_is_not_retried(
    tmp_path: Path, container: ContainerClient, logger: logging.Logger
) -> None:
    job = make_job(tmp_path)
    backend, client = make_backend(
        tmp_path, container, [Script("canceled-remotely"), Script("complete")], logger
    )

    with pytest.raises(GpuJobError, match="was canceled") as caught:
        backend.run(job)

    assert caught.value.retryable is False and len(client.jobs.submissions) == 1


def test_local_partial_output_is_uploaded_and_not_redone(
    tmp_path: Path, container: ContainerClient, logger: logging.Logger
) -> None:
    job = make_job(tmp_path)
    backend, client = make_backend(tmp_path, container, [Script("complete")], logger)
    report = ChunkReport(0, 0, "laptop", 5, 0.1, "cpu").__dict__
    atomic_write_bytes(job.output_dir / "chunks/00000.mkv", b"done locally")
    atomic_write_bytes(job.output_dir / DONE_DIR / "00000.json", json.dumps(report).encode())

    backend.run(job)

    assert client.jobs.submissions[0].processed == [1, 2]
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
    assert client.jobs.cancelled == [client.jobs.submissions[0].name]


def test_refused_submission_is_a_clear_non_retryable_error(
    tmp_path: Path, container: ContainerClient, logger: logging.Logger
) -> None:
    job = make_job(tmp_path)
    backend, client = make_backend(tmp_path, container, [Script("complete")], logger)
    client.jobs.refusal = HttpResponseError("QuotaExceeded: low priority cores quota is 0")

    with pytest.raises(GpuJobError, match="refused.*QuotaExceeded") as caught:
        backend.run(job)

    assert caught.value.retryable is False and client.jobs.submissions == []


def test_blob_job_storage_round_trip_skips_unchanged_files(
    tmp_path: Path, container: ContainerClient
) -> None:
    storage = BlobJobStorage(container)
    src = tmp_path / "src"
    atomic_write_bytes(src / "a.bin", b"a" * 1000)
    atomic_write_bytes(src / "deep/b.bin", b"b")
    (src / ".a.bin.123.tmp").write_bytes(b"partial")

    assert storage.upload_folder(src, "p/x") == 2
    assert storage.upload_folder(src, "p/x") == 0  # same content: nothing re-sent
    atomic_write_bytes(src / "deep/b.bin", b"B")
    assert storage.upload_folder(src, "p/x") == 1

    container.upload_blob("p/x/deep/.b.bin.k3j4.tmp", b"half-written by a preempted node")
    dest = tmp_path / "dest"
    assert storage.download_folder("p/x", dest) == 2
    assert (dest / "deep/b.bin").read_bytes() == b"B" and not list(dest.rglob("*.tmp"))
    assert storage.download_folder("p/x", dest) == 0


def test_blob_job_storage_refuses_names_escaping_the_folder(
    tmp_path: Path, container: ContainerClient
) -> None:
    # Blob names are free-form: "q//tmp/x" puts an absolute path after the folder prefix.
    # (The service itself rejects ".." segments, so this is the escape a name can attempt.)
    escape = tmp_path / "escape.txt"
    container.upload_blob(f"q/{escape}", b"x")
    with pytest.raises(GpuJobError, match="outside the job folder"):
        BlobJobStorage(container).download_folder("q", tmp_path / "dest")
    assert not escape.exists()


class _DelegationService:
    """Stands in for the service's Get User Delegation Key call (needs Entra ID, not Azurite)."""

    url = "https://restyledata.blob.core.windows.net/"
    account_name = "restyledata"

    def __init__(self) -> None:
        self.requested: list[tuple[datetime, datetime]] = []

    def get_user_delegation_key(
        self, key_start_time: datetime, key_expiry_time: datetime
    ) -> UserDelegationKey:
        self.requested.append((key_start_time, key_expiry_time))
        key = UserDelegationKey()
        key.signed_oid, key.signed_tid = "oid", "tid"
        key.signed_start = key_start_time.strftime("%Y-%m-%dT%H:%M:%SZ")
        key.signed_expiry = key_expiry_time.strftime("%Y-%m-%dT%H:%M:%SZ")
        key.signed_service, key.signed_version = "b", "2025-01-05"
        key.value = "a2V5LWJ5dGVzLWZvci10ZXN0aW5nLW9ubHktMzItYnl0ZXM="
        return key


def test_user_delegation_sas_is_read_only_https_and_short_lived() -> None:
    service = _DelegationService()
    url = user_delegation_read_url(service, "stylized", "starry night/clip 1.mp4", minutes=30)

    parts = urlsplit(url)
    query = parse_qs(parts.query)
    assert parts.path == "/stylized/starry%20night/clip%201.mp4"
    assert query["sp"] == ["r"] and query["spr"] == ["https"] and query["sr"] == ["b"]
    assert query["skoid"] == ["oid"] and "sig" in query
    expiry = datetime.strptime(query["se"][0], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert timedelta(minutes=29) < expiry - datetime.now(UTC) <= timedelta(minutes=30)
    # The delegation key lives no longer than the SAS it signs.
    assert service.requested[0][1] - datetime.now(UTC) <= timedelta(minutes=30)


def test_sign_blob_read_url_needs_an_account_name() -> None:
    key = _DelegationService().get_user_delegation_key(datetime.now(UTC), datetime.now(UTC))
    with pytest.raises(ValueError, match="account name"):
        sign_blob_read_url("https://x", None, "c", "b", key, datetime.now(UTC), datetime.now(UTC))


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

    import tasks.azureml as azureml
    from tasks import dispatch
    from tasks.settings import AzureMLSettings

    run_gpu_job = getattr(dispatch, "run_gpu_job", None)
    if run_gpu_job is None:
        pytest.skip("tasks.dispatch.run_gpu_job is not there yet")
    client = FakeMLClient(container, [Script("preempt", chunks=1), Script("complete")])
    # Only the remote control plane is replaced; backend construction runs as in production.
    monkeypatch.setattr(azureml, "make_ml_client", lambda settings, credential: client)
    monkeypatch.setattr(
        azureml.BlobJobStorage, "from_settings", classmethod(lambda cls, s, c: cls(container))
    )
    settings = stack_settings.model_copy(
        update={
            "compute": stack_settings.compute.model_copy(update={"backend": "azureml"}),
            "azureml": AzureMLSettings(
                subscription_id="sub", resource_group="rg", workspace="ws",
                data_datastore=DATASTORE, poll_seconds=0.05, backoff_seconds=0.01,
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
    assert [s.processed for s in client.jobs.submissions] == [[0], [1, 2]]
    with get_client(sync_client=True) as prefect:
        logs = prefect.read_logs(
            LogFilter(flow_run_id=LogFilterFlowRunId(any_=[state.state_details.flow_run_id]))
        )
    text = "\n".join(log.message for log in logs)
    assert "was preempted; resubmitting" in text and "processed chunks [1, 2]" in text
    assert LEAKY_LOG.split("sig=")[1] not in text and "sig=***" in text
    assert AZURITE_KEY not in text
