"""The real ``stylize-video`` flow on the ``azureml`` backend, end to end, against the test stack.

The flow runs in-process against the stack's Prefect server and Azurite, with
``RESTYLE_COMPUTE__BACKEND=azureml``. Only Azure ML's control plane is faked (the shared
:mod:`tests.fakes.azureml`, swapped in for :func:`tasks.compute.azureml.client.make_ml_client`),
and the job datastore is a container of the stack's Azurite reached with its connection string
instead of an Entra ID token (:meth:`BlobJobStorage.from_settings`). Everything else is
production code: the flow, the ``run-gpu-job`` task, backend construction in
:func:`tasks.compute.run.get_backend`, upload, polling, resubmission, download, reassembly,
artifacts and error reports.

The fake's :class:`~tests.fakes.azureml.CommandNode` runs each submission the way a cluster
node would: the real ``python -m gpu.stylize`` over the real chunks, on CPU in place of the
node's GPU, under ``mpiexec`` with the submitted rank count, from the submitted code snapshot.
A preempted node is modelled with gpu.stylize's own fault injection: the rank dies after some
chunks and Azure ML reports a PreemptionError.
"""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from azure.storage.blob import ContainerClient
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowRunFilter,
    FlowRunFilterName,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.exceptions import TerminationSignal
from prefect.logging.handlers import APILogHandler

from flows.stylize import stylize_video
from gpu.stylize import FAULT_EXIT_CODE
from tasks.compute.azureml import client as clients
from tasks.compute.azureml.folders import BlobJobStorage
from tasks.media import probe
from tasks.naming import stylized_names
from tasks.settings import LimitSettings, RestyleSettings
from tasks.storage import AzureBlobStore, BlobNotFoundError
from tests.clips import make_clip
from tests.fakes.azureml import (
    DATASTORE,
    SIGNATURE,
    CommandNode,
    FakeJobs,
    FakeMLClient,
    Script,
)

pytestmark = [pytest.mark.stack, pytest.mark.slow]

INPUT_CONTAINER = "azml-videos"
"""Not watched by the stack's watcher, so no automation starts a second (local) run of a clip."""
CHUNK_SECONDS = 0.25  # a 1 s clip at 12 fps: 4 chunks of 3 frames
PREEMPTED_AFTER_CHUNKS = 2


# --------------------------------------------------------------------------- fixtures


@dataclass
class AzureMLStack:
    """The stack configured for the azureml backend, and a way to script the fake's jobs."""

    settings: RestyleSettings
    store: AzureBlobStore
    datastore: ContainerClient
    style: str
    clip: Path
    blob: str
    clients: list[FakeMLClient] = field(default_factory=list)
    scripts: list[Script] = field(default_factory=list)

    @property
    def jobs(self) -> FakeJobs:
        return self.clients[0].jobs  # every client of the workspace sees the same jobs

    def output_blob(self, suffix: str) -> str:
        """The result (``.mp4``) or error report (``.error.json``), named by tasks.naming."""
        result, error = stylized_names(self.blob, self.style)
        return error if suffix == ".error.json" else result

    def run_flow(self) -> Any:
        return stylize_video(video=self.blob, style=self.style, return_state=True)

    def output_exists(self, suffix: str) -> bool:
        try:
            self.store.get_version(self.settings.storage.output_container, self.output_blob(suffix))
        except BlobNotFoundError:
            return False
        return True

    def download_output(self, suffix: str, dest: Path) -> Path:
        self.store.download(self.settings.storage.output_container, self.output_blob(suffix), dest)
        return dest


@pytest.fixture
def azml(
    stack_store: AzureBlobStore,
    stack_settings: RestyleSettings,
    registered_tiny_style: str,
    unique: str,
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[AzureMLStack]:
    env = {
        "RESTYLE_COMPUTE__BACKEND": "azureml",
        "RESTYLE_COMPUTE__DEVICE": "cpu",
        "RESTYLE_COMPUTE__CHUNK_SECONDS": str(CHUNK_SECONDS),
        "RESTYLE_STORAGE__INPUT_CONTAINER": INPUT_CONTAINER,
        "RESTYLE_WORK_DIR": str(tmp_path / "work"),
        "RESTYLE_AZUREML__SUBSCRIPTION_ID": "00000000-0000-0000-0000-000000000000",
        "RESTYLE_AZUREML__RESOURCE_GROUP": "rg-restyle",
        "RESTYLE_AZUREML__WORKSPACE": "ws-restyle",
        "RESTYLE_AZUREML__DATA_DATASTORE": DATASTORE,
        "RESTYLE_AZUREML__DATA_CONTAINER": f"azml-jobs-{unique}",
        "RESTYLE_AZUREML__DATA_ACCOUNT_URL": "https://restyledata.blob.core.windows.net",
        "RESTYLE_AZUREML__POLL_SECONDS": "0.2",
        "RESTYLE_COMPUTE__RETRY_BACKOFF_SECONDS": "0.05",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = RestyleSettings()
    stack_store.ensure_containers([INPUT_CONTAINER, settings.azureml.data_container])
    datastore = stack_store.client.get_container_client(settings.azureml.data_container)
    clip = make_clip(tmp_path / "clip.mp4", width=64, height=48, seconds=1.0, fps=12,
                     audio_streams=1)
    blob = f"{registered_tiny_style}/azml-{unique}.mp4"
    stack_store.upload_file(INPUT_CONTAINER, blob, clip)
    stack = AzureMLStack(settings, stack_store, datastore, registered_tiny_style, clip, blob)

    def fake_ml_client(aml: Any, credential: Any) -> FakeMLClient:
        assert (aml.subscription_id, aml.workspace) == (
            env["RESTYLE_AZUREML__SUBSCRIPTION_ID"], env["RESTYLE_AZUREML__WORKSPACE"]
        )
        node = CommandNode(datastore, tmp_path_factory.mktemp("nodes"))
        client = FakeMLClient(datastore, stack.scripts, node)
        if stack.clients:  # clients of one workspace (the flow's, the cancel hook's) share its jobs
            client.jobs, client.compute = stack.clients[0].jobs, stack.clients[0].compute
        stack.clients.append(client)
        return client

    def stack_datastore(cls: type[BlobJobStorage], aml: Any, credential: Any) -> BlobJobStorage:
        return cls(stack_store.client.get_container_client(aml.data_container))

    # Only what needs Azure itself is replaced; get_backend builds the backend as in production.
    monkeypatch.setattr(clients, "make_credential", lambda aml: object())
    monkeypatch.setattr(clients, "make_ml_client", fake_ml_client)
    monkeypatch.setattr(BlobJobStorage, "from_settings", classmethod(stack_datastore))
    yield stack
    datastore.delete_container()


def read_artifacts(flow_run_id: UUID) -> list[Any]:
    with get_client(sync_client=True) as prefect:
        return prefect.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )


def read_logs(flow_run_id: UUID) -> str:
    APILogHandler().flush()  # logs ship in the background; wait for them
    with get_client(sync_client=True) as prefect:
        logs = prefect.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
    return "\n".join(log.message for log in logs)


def assert_no_secrets(text: str, settings: RestyleSettings) -> None:
    connection = settings.storage.connection_string
    assert connection is not None
    account_key = re.search(r"AccountKey=([^;]+)", connection.get_secret_value())
    assert account_key and account_key.group(1) not in text
    assert SIGNATURE not in text
    assert not re.search(r"sig=(?!\*\*\*)", text), "an unmasked SAS signature"


# --------------------------------------------------------------------------- tests


def test_preempted_job_is_resubmitted_resumes_and_the_flow_completes(
    azml: AzureMLStack, tmp_path: Path
) -> None:
    azml.scripts += [Script("preempt", chunks=PREEMPTED_AFTER_CHUNKS), Script("complete")]

    state = azml.run_flow()

    assert state.is_completed(), state.message
    first, second = azml.jobs.submitted
    assert first.returncode == FAULT_EXIT_CODE and first.status == "Failed"
    assert second.returncode == 0 and second.status == "Completed"
    # Both attempts mount one output folder; the second redoes nothing the first finished.
    assert first.output_prefix == second.output_prefix
    chunks = [f"{i:05d}" for i in range(4)]
    assert first.pending_at_start == chunks
    assert first.chunks_written == chunks[:PREEMPTED_AFTER_CHUNKS]
    assert second.pending_at_start == chunks[PREEMPTED_AFTER_CHUNKS:]
    assert second.chunks_written == chunks[PREEMPTED_AFTER_CHUNKS:]
    assert not any(f"chunks/{stem}.mkv" in second.written for stem in first.chunks_written)
    assert f"{PREEMPTED_AFTER_CHUNKS} of 4 chunks to do" in second.logs[0]
    assert azml.jobs.cancelled == []

    result = probe(azml.download_output(".mp4", tmp_path / "out.mp4"), LimitSettings())
    source = probe(azml.clip, LimitSettings())
    assert result.video.frame_count == source.video.frame_count
    assert len(result.audio) == 1
    assert not azml.output_exists(".error.json")

    artifacts = read_artifacts(state.state_details.flow_run_id)
    table = next(a for a in artifacts if a.key == "stylize-stats")
    rows = json.loads(table.data) if isinstance(table.data, str) else table.data
    items = {row["item"]: row["value"] for row in rows}
    assert items["compute backend"] == "azureml"
    assert items["GPU job attempts"] == 2
    assert "PreemptionError" in items["retry 1 reason"] and first.name in items["retry 1 reason"]
    assert "retry 2 reason" not in items
    assert "sig=***" in items["retry 1 reason"]  # the service's text, masked on the way
    by_key = {a.key: a.data for a in artifacts}
    assert f"runs/{second.name}?" in by_key["azureml-studio"]  # the attempt that completed
    assert float(by_key["stylize-progress"]) == 100.0
    assert_no_secrets(json.dumps([a.model_dump(mode="json") for a in artifacts]), azml.settings)
    logs = read_logs(state.state_details.flow_run_id)
    assert "was preempted; resubmitting" in logs and "2 of 4 chunks to do" in logs
    assert "sig=***" in logs  # the job's leaky log line reached Prefect masked
    assert_no_secrets(logs, azml.settings)


def test_other_job_failure_fails_the_flow_fast_with_an_error_report(
    azml: AzureMLStack, tmp_path: Path
) -> None:
    azml.scripts += [Script("fail", chunks=1), Script("complete")]

    state = azml.run_flow()

    assert state.is_failed()
    (attempt,) = azml.jobs.submitted  # not resubmitted
    assert attempt.returncode == FAULT_EXIT_CODE
    assert not azml.output_exists(".mp4")
    report_text = azml.download_output(".error.json", tmp_path / "report.json").read_text()
    report = json.loads(report_text)
    assert report["reason"].startswith("GpuJobError: ")
    assert f"Azure ML job {attempt.name} failed" in report["reason"]
    assert f"exited with status code {FAULT_EXIT_CODE}" in report["reason"]
    assert "sig=***" in report["reason"]  # the job's error, masked on the way
    assert report["flow_run_id"] == str(state.state_details.flow_run_id)
    tags = azml.store.get_tags(INPUT_CONTAINER, azml.blob)
    assert tags == {"restyle-status": "failed"}
    assert_no_secrets(report_text, azml.settings)
    artifacts = read_artifacts(state.state_details.flow_run_id)
    assert not any(a.key == "stylize-stats" for a in artifacts)
    assert_no_secrets(json.dumps([a.model_dump(mode="json") for a in artifacts]), azml.settings)


def test_terminating_the_flow_run_cancels_the_azure_ml_job(azml: AzureMLStack) -> None:
    """What a Prefect worker does to cancel a flow run: SIGTERM to the flow-run process."""
    azml.scripts += [Script("hang"), Script("complete")]
    terminated = threading.Event()

    def terminate_once_running() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if azml.clients and azml.jobs.submitted and azml.jobs.submitted[0].status == "Running":
                terminated.set()
                os.kill(os.getpid(), signal.SIGTERM)  # Prefect's handler turns it into an error
                return
            time.sleep(0.05)

    killer = threading.Thread(target=terminate_once_running, daemon=True)
    # Prefect hands the signal on to the handler it found (to let the process die): make that
    # one harmless, or pytest itself is terminated.
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: None)
    try:
        killer.start()
        with pytest.raises(TerminationSignal):
            azml.run_flow()
        killer.join()
    finally:
        signal.signal(signal.SIGTERM, previous)

    assert terminated.is_set()
    (attempt,) = azml.jobs.submitted
    # The backend cancels on the signal and the on_crashed hook again while the job is still
    # cancelling: both ask for this one job, and no other.
    assert set(azml.jobs.cancelled) == {attempt.name}
    assert azml.jobs.get(attempt.name).status == "Canceled"
    assert not azml.output_exists(".mp4")
    with get_client(sync_client=True) as prefect:
        (run,) = prefect.read_flow_runs(
            flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[Path(azml.blob).name]))
        )
    # Without a runner's cancel intent the engine records the termination as a crash.
    assert run.state is not None and run.state.is_crashed(), run.state
