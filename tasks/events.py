"""The one shape of a blob-created event, shared by the local watcher and the Event Grid bridge.

Both event sources call :func:`blob_created_event` so the deployment trigger in ``prefect.yaml``
serves either. The event id is derived from the blob's identity and etag, so a source that
re-sends the same blob version produces the same id and Prefect can drop the repeat.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

BLOB_CREATED_EVENT = "restyle.blob.created"
"""Prefect event name for 'a blob, or a new version of one, now exists'."""

_EVENT_NAMESPACE = uuid.UUID("6f1c9a52-3c1e-4b8a-9a57-2f8e0b3c7d11")


@dataclass(frozen=True)
class BlobVersion:
    """One version of one blob, as an event source saw it.

    Attributes:
        account: Storage account name (``devstoreaccount1`` on Azurite).
        container: Container name, for example ``videos``.
        blob: Blob name inside the container, for example ``starry_night/clip.mp4``.
        etag: The blob version's ETag, quotes stripped.
        size: Content length in bytes.
        content_type: The blob's content type, if known.
        metadata: The blob's user metadata, when the store read it (not part of identity).
    """

    account: str
    container: str
    blob: str
    etag: str
    size: int
    content_type: str | None = None
    metadata: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    @property
    def event_id(self) -> uuid.UUID:
        """Deterministic id: the same blob version always yields the same event id."""
        key = f"{self.account}/{self.container}/{self.blob}@{self.etag}"
        return uuid.uuid5(_EVENT_NAMESPACE, key)


def blob_created_event(version: BlobVersion, source: str) -> dict[str, Any]:
    """Build the keyword arguments of ``prefect.events.emit_event`` for one blob version.

    Args:
        version: The blob version that appeared.
        source: Which event source saw it (``azurite-watcher`` or ``event-grid``).

    Returns:
        ``event``, ``resource``, ``payload`` and ``id`` for ``emit_event``.
    """
    etag = version.etag.strip('"')
    return {
        "event": BLOB_CREATED_EVENT,
        "id": version.event_id,
        "resource": {
            "prefect.resource.id": (
                f"azure.storage.{version.account}.{version.container}/{version.blob}"
            ),
            "prefect.resource.name": version.blob,
            "restyle.container": version.container,
            "restyle.account": version.account,
        },
        "payload": {
            "account": version.account,
            "container": version.container,
            "blob": version.blob,
            "etag": etag,
            "size": version.size,
            "content_type": version.content_type,
            "source": source,
        },
    }
