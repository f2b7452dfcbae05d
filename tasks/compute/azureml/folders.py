"""Job folders in the data account: upload the input, mirror the output, delete after success.

Each job has one folder per job *content* (:func:`~tasks.compute.azureml.spec.job_key`)::

    <job_prefix>/<key>/input/    uploaded from GpuJob.input_dir  (ro_mount in the job)
    <job_prefix>/<key>/output/   written by the job                (rw_mount in the job)
"""

from __future__ import annotations

import functools
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from azure.storage.blob import BlobServiceClient, ContainerClient

from tasks.compute.base import GpuJobError
from tasks.settings import AzureMLSettings

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

_SHA_KEY = "restylesha256"


class JobFolderStorage(Protocol):
    """Moves job folders between this machine and the datastore behind the job's mounts."""

    def upload_folder(self, local: Path, prefix: str) -> int:
        """Upload every file under ``local`` to ``prefix/<relative path>``; returns files sent."""
        ...

    def download_folder(self, prefix: str, local: Path) -> int:
        """Download every blob under ``prefix/`` into ``local``; returns files fetched."""
        ...

    def delete_folder(self, prefix: str) -> int:
        """Delete every blob under ``prefix/``; returns blobs deleted."""
        ...


def sha256(path: Path) -> str:
    """SHA-256 of a file; memoized by (path, size, mtime) because chunk folders are large and
    both the job key and :meth:`BlobJobStorage.upload_folder` need every digest."""
    stat = path.stat()
    return _sha256_of(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=4096)
def _sha256_of(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def is_temporary(name: str) -> bool:
    """``gpu/jobdir.py`` writes ``.<name>.<random>.tmp`` and renames; such files are not results."""
    base = name.rsplit("/", 1)[-1]
    return base.startswith(".") and base.endswith(".tmp")


def local_files(root: Path) -> Iterator[tuple[Path, str]]:
    """Files under ``root`` and their POSIX relative paths, skipping temporary ``.*.tmp`` files."""
    for path in sorted(root.rglob("*")):
        if path.is_file() and not is_temporary(path.name):
            yield path, path.relative_to(root).as_posix()


class BlobJobStorage:
    """:class:`JobFolderStorage` over one blob container (the datastore's container).

    Uploads skip blobs whose stored SHA-256 (blob metadata) matches the local file, so a retry
    re-sends nothing; downloads skip local files of the blob's size and land atomically (temporary
    name, then ``os.replace``) because the flow reads the output folder while it fills.
    """

    def __init__(self, container: ContainerClient) -> None:
        self.container = container

    @classmethod
    def from_settings(
        cls, settings: AzureMLSettings, credential: TokenCredential
    ) -> BlobJobStorage:
        """The job container of the data account, authenticated with ``credential`` (no key)."""
        if not settings.data_account_url:
            raise GpuJobError("azureml.data_account_url is not set (https://<account>.blob...)")
        service = BlobServiceClient(settings.data_account_url, credential=credential)
        return cls(service.get_container_client(settings.data_container))

    def upload_folder(self, local: Path, prefix: str) -> int:
        remote = {
            props.name: (props.metadata or {}).get(_SHA_KEY)
            for props in self.container.list_blobs(
                name_starts_with=f"{prefix}/", include=["metadata"]
            )
        }
        sent = 0
        for path, rel in local_files(local):
            name = f"{prefix}/{rel}"
            digest = sha256(path)
            if remote.get(name) == digest:
                continue
            with path.open("rb") as fh:
                self.container.upload_blob(name, fh, overwrite=True, metadata={_SHA_KEY: digest})
            sent += 1
        return sent

    def download_folder(self, prefix: str, local: Path) -> int:
        fetched = 0
        for props in self.container.list_blobs(name_starts_with=f"{prefix}/"):
            if is_temporary(props.name):  # left by a preempted writer, or still being written
                continue
            rel = props.name[len(prefix) + 1 :]
            dest = (local / rel).resolve()
            if not dest.is_relative_to(local.resolve()) or rel.endswith("/"):
                raise GpuJobError(f"refusing to download blob outside the job folder: {rel!r}")
            if dest.exists() and dest.stat().st_size == props.size:
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
            try:
                with os.fdopen(fd, "wb") as fh:
                    self.container.download_blob(props.name).readinto(fh)
                os.replace(tmp, dest)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            fetched += 1
        return fetched

    def delete_folder(self, prefix: str) -> int:
        names = [props.name for props in self.container.list_blobs(name_starts_with=f"{prefix}/")]
        for name in names:
            self.container.delete_blob(name)
        return len(names)
