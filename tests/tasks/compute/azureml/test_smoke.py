"""The smoke job (``make azure-smoke``), offline: the shared Azure ML fake runs the real node
script under ``mpiexec``, the datastore and the output container are Azurite's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError
from azure.storage.blob import BlobServiceClient, ContainerClient

from tasks.compute.azureml import client as clients
from tasks.compute.azureml.folders import BlobJobStorage
from tasks.compute.azureml.smoke import (
    allgather_check,
    cuda_check,
    image_check,
    scale_to_zero_check,
    worker_blob_check,
)
from tasks.compute.base import GpuJobError
from tasks.storage import AzureBlobStore
from tests.azurite import blob_service, container, needs_azurite  # noqa: F401 - fixtures
from tests.fakes.azureml import DATASTORE, CommandNode, FakeMLClient, Script


def report(*cuda: bool) -> dict[str, Any]:
    ranks = [{"rank": i, "host": f"node-{i // 2}", "probe_sha256": "abc",
              "cuda": {"available": ok, "torch": "2.13.0", "torch_cuda": "12.6",
                       "device": "NVIDIA A100 80GB PCIe" if ok else None,
                       "reason": None if ok else "The NVIDIA driver on your system is too old"}}
             for i, ok in enumerate(cuda)]
    return {"ranks": ranks, "world_size": len(ranks), "python": "3.11.9",
            "mpi_library_version": "Open MPI v5.0.6", "mpi_version": "3.1",
            "mpi4py_version": "4.1.2"}


@needs_azurite
@pytest.mark.slow
def test_smoke_tool_runs_the_node_script_and_reports_each_check(
    tmp_path: Path, container: ContainerClient, blob_service: BlobServiceClient,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    from tools.azure_smoke import main

    outputs = blob_service.get_container_client(f"{container.container_name}-out")
    outputs.create_container()
    account = blob_service.credential.account_key
    env = {
        "RESTYLE_WORK_DIR": str(tmp_path / "work"),
        "RESTYLE_STORAGE__CONNECTION_STRING": (
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
            f"AccountKey={account};BlobEndpoint={blob_service.url.rstrip('/')};"),
        "RESTYLE_STORAGE__OUTPUT_CONTAINER": outputs.container_name,
        "RESTYLE_AZUREML__SUBSCRIPTION_ID": "sub",
        "RESTYLE_AZUREML__RESOURCE_GROUP": "rg",
        "RESTYLE_AZUREML__WORKSPACE": "ws",
        "RESTYLE_AZUREML__DATA_DATASTORE": DATASTORE,
        "RESTYLE_AZUREML__DATA_ACCOUNT_URL": "https://restyledata.blob.core.windows.net",
        "RESTYLE_AZUREML__GPUS_PER_NODE": "2",
        "RESTYLE_AZUREML__POLL_SECONDS": "0.2",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    # This machine has no GPU, and the node runs the check as it is: CUDA must fail, for real.
    node = CommandNode(container, tmp_path_factory.mktemp("nodes"), cpu_for_gpu=False)
    fake = FakeMLClient(container, [Script("complete")], node)
    monkeypatch.setattr(clients, "make_credential", lambda settings: object())
    monkeypatch.setattr(clients, "make_ml_client", lambda settings, credential: fake)
    monkeypatch.setattr(BlobJobStorage, "from_settings",
                        classmethod(lambda cls, settings, credential: cls(container)))

    status = main(["--scale-wait-minutes", "0"])

    out = capsys.readouterr().out
    lines = {line.split(":")[0]: line for line in out.splitlines() if line[:4] in
             ("PASS", "FAIL", "SKIP")}
    assert status == 1, out
    assert lines["PASS  image builds and pulls"]
    assert "rank 1 on" in lines["FAIL  CUDA on every rank"]
    assert "rank 0 on" in lines["FAIL  CUDA on every rank"] and "a CPU-only build" in out
    assert "2 rank(s) on Open MPI v5" in lines["PASS  mpi4py allgather across the ranks"]
    assert lines["PASS  job identity reads and writes the jobs datastore"]
    assert lines["PASS  worker writes, tags and deletes blobs"]
    assert lines["SKIP  cluster scales back to zero"]
    (job,) = fake.jobs.submitted
    assert job.ranks == 2 and "--device cuda" in job.command and job.returncode == 3
    assert [p.name for p in job.code_dir.iterdir()] == ["smoke_node.py"]
    assert not list(container.list_blobs()) and not list(outputs.list_blobs())  # nothing left


def test_cuda_passes_only_when_every_rank_has_it() -> None:
    assert cuda_check(report(True, True), None).passed is True
    failed = cuda_check(report(True, False), None)
    assert failed.passed is False and "rank 1 on node-0" in failed.detail
    assert "built for CUDA 12.6" in failed.fix and "fix:" in failed.line()
    assert cuda_check(None, None).passed is None


def test_allgather_must_reach_every_rank() -> None:
    assert allgather_check(report(True, True), 2).passed is True
    short = allgather_check(report(True), 2)
    assert short.passed is False and "GPUS_PER_NODE" in short.fix


def test_a_job_that_never_ran_fails_the_image_check_with_the_error() -> None:
    check = image_check(None, GpuJobError("ImageBuildFailure: conda env creation failed"))
    assert check.passed is False and "ImageBuildFailure" in check.detail
    assert "AcrPull" in check.fix


class _NoTagsStore:
    """The data account as an identity with Contributor but no tags/write sees it."""

    def __init__(self) -> None:
        self.written: list[str] = []

    def upload_json(self, account_container: str, blob: str, data: Any) -> None:
        self.written.append(blob)

    def set_tags(self, account_container: str, blob: str, tags: dict[str, str]) -> None:
        error = HttpResponseError("This request is not authorized to perform this operation")
        error.status_code = 403
        raise error


def test_worker_without_a_tag_role_fails_saying_which_role() -> None:
    check = worker_blob_check(_NoTagsStore(), "stylized", "t0k3n")  # type: ignore[arg-type]
    assert check.passed is False and check.detail.startswith("tag of stylized/restyle-smoke/")
    assert "Storage Blob Data Owner" in check.fix


@needs_azurite
def test_worker_blob_check_leaves_nothing_behind(blob_service: BlobServiceClient) -> None:  # noqa: F811
    blob_service.create_container("smoke-out")
    check = worker_blob_check(AzureBlobStore(blob_service), "smoke-out", "t0k3n")
    assert check.passed is True
    assert not list(blob_service.get_container_client("smoke-out").list_blobs())


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_scale_to_zero_waits_for_the_nodes_to_go(tmp_path: Path) -> None:
    fake = FakeMLClient(None, [])  # type: ignore[arg-type]
    fake.jobs.submitted.append(type("Done", (), {"status": "Completed"})())  # type: ignore[arg-type]
    clock = _Clock()

    check = scale_to_zero_check(fake, "gpu", 600, clock.sleep, clock)

    assert check.passed is True and clock.now == 60  # two idle listings, 30 s apart


def test_scale_to_zero_fails_when_nodes_stay_or_cannot_go() -> None:
    fake = FakeMLClient(None, [])  # type: ignore[arg-type]
    fake.jobs.submitted.append(type("Busy", (), {"status": "Running"})())  # type: ignore[arg-type]
    clock = _Clock()
    stuck = scale_to_zero_check(fake, "gpu", 90, clock.sleep, clock)
    assert stuck.passed is False and "still up after 2 min" in stuck.detail
    fake.compute.min_instances = 1
    pinned = scale_to_zero_check(fake, "gpu", 90, clock.sleep, clock)
    assert pinned.passed is False and "min_instances: 0" in pinned.fix
