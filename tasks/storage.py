"""Blob storage: one small interface, one implementation over azure-storage-blob.

The same :class:`AzureBlobStore` serves Azurite (the connection string the local stack exports)
and a real account (an account URL plus an Entra ID credential, so no key is ever needed).
:func:`make_blob_store` builds it from the credentials :mod:`tasks.storage_credentials` chooses.

Uploads are atomic by the service's own semantics: a block blob appears only when its block list
is committed (or its single Put Blob completes), so a reader never sees a partial result.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import BlobServiceClient, ContentSettings
from prefect import get_run_logger, task

from tasks.events import BlobVersion
from tasks.settings import StorageSettings
from tasks.storage_credentials import blob_service_client

logger = logging.getLogger(__name__)


class BlobNotFoundError(FileNotFoundError):
    """The named blob does not exist (or no longer does)."""


class BlobStore(Protocol):
    """What restyle needs from blob storage."""

    account_name: str

    def ensure_containers(self, names: list[str]) -> None: ...

    def list_versions(self, container: str) -> Iterator[BlobVersion]: ...

    def get_version(self, container: str, blob: str) -> BlobVersion: ...

    def download(self, container: str, blob: str, dest: Path) -> BlobVersion: ...

    def upload_file(
        self, container: str, blob: str, src: Path, content_type: str | None = None
    ) -> BlobVersion: ...

    def upload_json(self, container: str, blob: str, data: Any) -> BlobVersion: ...

    def delete(self, container: str, blob: str) -> None: ...

    def set_tags(self, container: str, blob: str, tags: dict[str, str]) -> None: ...

    def get_tags(self, container: str, blob: str) -> dict[str, str]: ...

    def url(self, container: str, blob: str) -> str: ...


class AzureBlobStore:
    """:class:`BlobStore` over azure-storage-blob (Azurite or a real account)."""

    def __init__(self, client: BlobServiceClient) -> None:
        self.client = client
        self.account_name = client.account_name or "unknown"

    def ensure_containers(self, names: list[str]) -> None:
        for name in names:
            with contextlib.suppress(ResourceExistsError):
                self.client.create_container(name)

    def list_versions(self, container: str) -> Iterator[BlobVersion]:
        for props in self.client.get_container_client(container).list_blobs():
            yield self._version(container, props.name, props)

    def get_version(self, container: str, blob: str) -> BlobVersion:
        try:
            props = self.client.get_blob_client(container, blob).get_blob_properties()
        except ResourceNotFoundError:
            raise BlobNotFoundError(f"{container}/{blob} does not exist") from None
        return self._version(container, blob, props)

    def download(self, container: str, blob: str, dest: Path) -> BlobVersion:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.part")
        try:
            downloader = self.client.get_blob_client(container, blob).download_blob()
        except ResourceNotFoundError:
            raise BlobNotFoundError(f"{container}/{blob} does not exist") from None
        with tmp.open("wb") as fh:
            downloader.readinto(fh)
        tmp.replace(dest)
        return self._version(container, blob, downloader.properties)

    def upload_file(
        self, container: str, blob: str, src: Path, content_type: str | None = None
    ) -> BlobVersion:
        settings = ContentSettings(content_type=content_type) if content_type else None
        with src.open("rb") as fh:
            self.client.get_blob_client(container, blob).upload_blob(
                fh, overwrite=True, content_settings=settings, max_concurrency=2
            )
        return self.get_version(container, blob)

    def upload_json(self, container: str, blob: str, data: Any) -> BlobVersion:
        body = json.dumps(data, indent=2, sort_keys=True).encode()
        self.client.get_blob_client(container, blob).upload_blob(
            body, overwrite=True, content_settings=ContentSettings(content_type="application/json")
        )
        return self.get_version(container, blob)

    def delete(self, container: str, blob: str) -> None:
        with contextlib.suppress(ResourceNotFoundError):
            self.client.get_blob_client(container, blob).delete_blob()

    def set_tags(self, container: str, blob: str, tags: dict[str, str]) -> None:
        try:
            self.client.get_blob_client(container, blob).set_blob_tags(tags)
        except ResourceNotFoundError:
            raise BlobNotFoundError(f"{container}/{blob} does not exist") from None

    def get_tags(self, container: str, blob: str) -> dict[str, str]:
        return dict(self.client.get_blob_client(container, blob).get_blob_tags())

    def url(self, container: str, blob: str) -> str:
        """The blob's plain URL (no SAS: reading it still needs the reader's own access)."""
        return self.client.get_blob_client(container, blob).url

    def _version(self, container: str, blob: str, props: Any) -> BlobVersion:
        content_type = props.content_settings.content_type if props.content_settings else None
        return BlobVersion(
            account=self.account_name,
            container=container,
            blob=blob,
            etag=str(props.etag).strip('"'),
            size=int(props.size),
            content_type=content_type,
        )


def make_blob_store(settings: StorageSettings, quick: bool = False) -> AzureBlobStore:
    """Connect to the account that ``settings`` describe.

    The credentials are a prefect-azure block (:mod:`tasks.storage_credentials`): the saved block
    ``storage.credentials_block`` names, else one built from ``storage.account_url`` (Entra ID,
    no key) or ``storage.connection_string`` (Azurite). ``quick`` gives up after one short try,
    for optional look-ups that must never stall.

    Raises:
        tasks.storage_credentials.StorageNotConfiguredError: no, conflicting or malformed
            credentials; the message says which setting to fix.
    """
    return AzureBlobStore(blob_service_client(settings, quick=quick))


# --- Prefect tasks --------------------------------------------------------------------------


@task(name="fetch-input", retries=2, retry_delay_seconds=2)
def fetch_input(store: BlobStore, container: str, blob: str, dest: Path) -> BlobVersion:
    """Download the input blob to ``dest``.

    Returns:
        The version that was downloaded (its etag identifies the run's input).
    """
    get_run_logger().info("downloading %s/%s", container, blob)
    return store.download(container, blob, dest)


@task(name="upload-result", retries=2, retry_delay_seconds=2)
def upload_result(store: BlobStore, container: str, blob: str, src: Path) -> BlobVersion:
    """Upload the finished video; the blob appears only once the upload is complete."""
    get_run_logger().info("uploading %s/%s (%d bytes)", container, blob, src.stat().st_size)
    return store.upload_file(container, blob, src, content_type="video/mp4")


@task(name="report-failure", retries=2, retry_delay_seconds=2)
def report_failure(
    store: BlobStore,
    output: tuple[str, str],
    source: tuple[str, str],
    error: BaseException,
    flow_run_id: str,
    context: dict[str, Any],
) -> None:
    """Write the ``.error.json`` report and tag the input blob as failed.

    The report holds the human-readable reason (the exception's type and message, which is also
    the flow run's failure message), the flow run id, the time and ``context``.
    """
    reason = f"{type(error).__name__}: {error}"
    get_run_logger().error("failed: %s", reason)
    report = {**context, "reason": reason, "flow_run_id": flow_run_id,
              "time": datetime.now(UTC).isoformat()}
    store.upload_json(output[0], output[1], report)
    # A missing input cannot be tagged; the report already says it is missing.
    with contextlib.suppress(BlobNotFoundError):
        store.set_tags(source[0], source[1], {"restyle-status": "failed"})
