"""Job folders in a real blob container (Azurite): upload, mirror, delete."""

from __future__ import annotations

from pathlib import Path

import pytest
from azure.storage.blob import ContainerClient

from gpu.jobdir import atomic_write_bytes
from tasks.compute.azureml.folders import BlobJobStorage
from tasks.compute.base import GpuJobError
from tests.azurite import blob_service, container, needs_azurite  # noqa: F401 - fixtures

pytestmark = needs_azurite


def test_blob_job_storage_round_trip_skips_unchanged_files(
    tmp_path: Path, container: ContainerClient  # noqa: F811
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


def test_delete_folder_deletes_that_folder_only(
    tmp_path: Path, container: ContainerClient  # noqa: F811
) -> None:
    storage = BlobJobStorage(container)
    for name in ("p/x/input/a", "p/x/output/done/b", "p/xy/c", "q/d"):
        container.upload_blob(name, b"1")

    assert storage.delete_folder("p/x") == 2
    assert sorted(b.name for b in container.list_blobs()) == ["p/xy/c", "q/d"]


def test_blob_job_storage_refuses_names_escaping_the_folder(
    tmp_path: Path, container: ContainerClient  # noqa: F811
) -> None:
    # Blob names are free-form: "q//tmp/x" puts an absolute path after the folder prefix.
    # (The service itself rejects ".." segments, so this is the escape a name can attempt.)
    escape = tmp_path / "escape.txt"
    container.upload_blob(f"q/{escape}", b"x")
    with pytest.raises(GpuJobError, match="outside the job folder"):
        BlobJobStorage(container).download_folder("q", tmp_path / "dest")
    assert not escape.exists()
