"""The smoke job's checks, offline: each one's verdict, detail and fix. The whole tool, end to end
against the Azure ML fake, is tests/tools/test_azure_smoke.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from azure.core.exceptions import HttpResponseError
from azure.storage.blob import BlobServiceClient

from tasks.compute.azureml.smoke import (
    allgather_check,
    cuda_check,
    datastore_check,
    image_check,
    scale_to_zero_check,
    worker_blob_check,
)
from tasks.compute.base import GpuJobError
from tasks.storage import AzureBlobStore
from tests.azurite import blob_service, needs_azurite  # noqa: F401 - fixtures
from tests.fakes.azureml import FakeMLClient


def report(*cuda: bool) -> dict[str, Any]:
    ranks = [{"rank": i, "host": f"node-{i // 2}", "probe_sha256": "abc",
              "cuda": {"available": ok, "torch": "2.13.0", "torch_cuda": "12.9",
                       "device": "NVIDIA A100 80GB PCIe" if ok else None,
                       "reason": None if ok else "The NVIDIA driver on your system is too old"}}
             for i, ok in enumerate(cuda)]
    return {"ranks": ranks, "world_size": len(ranks), "python": "3.11.9",
            "mpi_library_version": "Open MPI v5.0.6", "mpi_version": "3.1",
            "mpi4py_version": "4.1.2"}


def test_cuda_passes_only_when_every_rank_has_it() -> None:
    assert cuda_check(report(True, True), None).passed is True
    failed = cuda_check(report(True, False), None)
    assert failed.passed is False and "rank 1 on node-0" in failed.detail
    assert "built for CUDA 12.9" in failed.fix and "fix:" in failed.line()
    assert cuda_check(None, None).passed is None


def test_allgather_must_reach_every_rank() -> None:
    assert allgather_check(report(True, True), 2).passed is True
    short = allgather_check(report(True), 2)
    assert short.passed is False and "GPUS_PER_NODE" in short.fix


def test_a_rank_that_could_not_read_the_input_mount_fails_the_datastore_check() -> None:
    assert datastore_check(report(True, True), "abc").passed is True
    unread = report(True, True)
    unread["ranks"][1]["probe_sha256"] = "unreadable: [Errno 13] Permission denied"
    check = datastore_check(unread, "abc")
    assert check.passed is False and check.detail.startswith("rank 1: unreadable")
    assert "Storage Blob Data Contributor" in check.fix
    assert datastore_check(None, "abc").passed is False


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
