"""Blob storage: one small interface, one implementation over azure-storage-blob.

The same :class:`AzureBlobStore` serves Azurite (the connection string the local stack exports)
and a real account (an account URL plus an Entra ID credential, so no key is ever needed).
:func:`make_blob_store` builds it from the credentials :mod:`tasks.storage_credentials` chooses.

Uploads are atomic by the service's own semantics: a block blob appears only when its block list
is committed (or its single Put Blob completes), so a reader never sees a partial result.
Writes, deletes and downloads can be made conditional on a blob's etag (``if_match``) or on its
absence (``if_absent``); a condition that does not hold raises :class:`BlobConditionError` and
changes nothing, which is what :mod:`tasks.outputs` builds its lost-update-free commit on.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.storage.blob import BlobServiceClient, ContentSettings

from tasks.events import BlobVersion
from tasks.settings import StorageSettings
from tasks.storage_credentials import blob_service_client
from tasks.storage_links import result_link

logger = logging.getLogger(__name__)


class BlobNotFoundError(FileNotFoundError):
    """The named blob does not exist (or no longer does)."""


class BlobConditionError(RuntimeError):
    """A conditional operation's condition did not hold: the blob changed, or already exists."""


def _conditions(if_match: str | None) -> dict[str, Any]:
    if if_match is None:
        return {}
    etag = '"' + if_match.strip('"') + '"'
    return {"etag": etag, "match_condition": MatchConditions.IfNotModified}


class BlobStore(Protocol):
    """What restyle needs from blob storage."""

    account_name: str

    def ensure_containers(self, names: list[str]) -> None: ...

    def list_versions(self, container: str) -> Iterator[BlobVersion]: ...

    def get_version(self, container: str, blob: str) -> BlobVersion: ...

    def download(
        self, container: str, blob: str, dest: Path, if_match: str | None = None
    ) -> BlobVersion: ...

    def upload_file(
        self, container: str, blob: str, src: Path, content_type: str | None = None,
        metadata: Mapping[str, str] | None = None, if_match: str | None = None,
        if_absent: bool = False,
    ) -> BlobVersion: ...

    def upload_json(
        self, container: str, blob: str, data: Any, metadata: Mapping[str, str] | None = None
    ) -> BlobVersion: ...

    def delete(self, container: str, blob: str, if_match: str | None = None) -> None: ...

    def set_tags(self, container: str, blob: str, tags: dict[str, str]) -> None: ...

    def get_tags(self, container: str, blob: str) -> dict[str, str]: ...

    def share_url(self, container: str, blob: str, minutes: int) -> str:
        """A URL a person can open for ``minutes`` (signed read-only on a real account)."""
        ...


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

    def download(
        self, container: str, blob: str, dest: Path, if_match: str | None = None
    ) -> BlobVersion:
        """Copy the blob to ``dest`` (whole or not at all); with ``if_match``, only that version.

        Raises:
            BlobNotFoundError: no such blob.
            BlobConditionError: the blob is no longer version ``if_match``.
        """
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.part")
        try:
            downloader = self.client.get_blob_client(container, blob).download_blob(
                **_conditions(if_match)
            )
        except ResourceNotFoundError:
            raise BlobNotFoundError(f"{container}/{blob} does not exist") from None
        except ResourceModifiedError:
            raise BlobConditionError(f"{container}/{blob} is not {if_match} any more") from None
        with tmp.open("wb") as fh:
            downloader.readinto(fh)
        tmp.replace(dest)
        return self._version(container, blob, downloader.properties)

    def upload_file(
        self, container: str, blob: str, src: Path, content_type: str | None = None,
        metadata: Mapping[str, str] | None = None, if_match: str | None = None,
        if_absent: bool = False,
    ) -> BlobVersion:
        """Upload ``src`` with ``metadata``: replace only version ``if_match``, create only with
        ``if_absent``, else overwrite.

        Raises:
            BlobConditionError: the condition did not hold; the blob is unchanged.
        """
        settings = ContentSettings(content_type=content_type) if content_type else None
        try:
            with src.open("rb") as fh:
                self.client.get_blob_client(container, blob).upload_blob(
                    fh, overwrite=not if_absent, content_settings=settings, max_concurrency=2,
                    metadata=dict(metadata) if metadata else None, **_conditions(if_match),
                )
        except ResourceModifiedError:
            raise BlobConditionError(f"{container}/{blob} changed since {if_match}") from None
        except ResourceExistsError:
            raise BlobConditionError(f"{container}/{blob} already exists") from None
        return self.get_version(container, blob)

    def upload_json(
        self, container: str, blob: str, data: Any, metadata: Mapping[str, str] | None = None
    ) -> BlobVersion:
        body = json.dumps(data, indent=2, sort_keys=True).encode()
        self.client.get_blob_client(container, blob).upload_blob(
            body, overwrite=True, content_settings=ContentSettings(content_type="application/json"),
            metadata=dict(metadata) if metadata else None,
        )
        return self.get_version(container, blob)

    def delete(self, container: str, blob: str, if_match: str | None = None) -> None:
        """Delete the blob if it exists; with ``if_match``, only that version.

        Raises:
            BlobConditionError: the blob is no longer version ``if_match``; it is kept.
        """
        try:
            self.client.get_blob_client(container, blob).delete_blob(**_conditions(if_match))
        except ResourceNotFoundError:
            pass
        except ResourceModifiedError:
            raise BlobConditionError(f"{container}/{blob} changed since {if_match}") from None

    def set_tags(self, container: str, blob: str, tags: dict[str, str]) -> None:
        try:
            self.client.get_blob_client(container, blob).set_blob_tags(tags)
        except ResourceNotFoundError:
            raise BlobNotFoundError(f"{container}/{blob} does not exist") from None

    def get_tags(self, container: str, blob: str) -> dict[str, str]:
        return dict(self.client.get_blob_client(container, blob).get_blob_tags())

    def share_url(self, container: str, blob: str, minutes: int) -> str:
        """Signed with a read-only user-delegation SAS on a real account (blobs are private);
        the plain URL on Azurite, whose reader holds the key anyway."""
        return result_link(self.client, container, blob, minutes)

    def _version(self, container: str, blob: str, props: Any) -> BlobVersion:
        content_type = props.content_settings.content_type if props.content_settings else None
        return BlobVersion(
            account=self.account_name,
            container=container,
            blob=blob,
            etag=str(props.etag).strip('"'),
            size=int(props.size),
            content_type=content_type,
            metadata=dict(props.metadata or {}),
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
