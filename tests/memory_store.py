"""An in-memory :class:`tasks.storage.BlobStore` for fast tests of the rules built on it.

It keeps the service's semantics that those rules rely on: every write makes a new etag,
conditions on etag or absence, metadata, tags. ``tests/tasks/test_storage.py`` runs the same
checks against Azurite and against this store, so the two cannot drift apart.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tasks.events import BlobVersion
from tasks.storage import BlobConditionError, BlobNotFoundError


@dataclass
class _Blob:
    data: bytes
    etag: str
    content_type: str | None
    metadata: dict[str, str]
    tags: dict[str, str] = field(default_factory=dict)


class MemoryBlobStore:
    """Containers of blobs in a dict; ``before_write`` runs before every write (a test's race)."""

    account_name = "memory"

    def __init__(self) -> None:
        self.containers: dict[str, dict[str, _Blob]] = {}
        self._etags = itertools.count(1)
        self.before_write: Callable[[str, str], None] | None = None

    def ensure_containers(self, names: list[str]) -> None:
        for name in names:
            self.containers.setdefault(name, {})

    def list_versions(self, container: str) -> Iterator[BlobVersion]:
        for name in sorted(self.containers.get(container, {})):
            yield self.get_version(container, name)

    def get_version(self, container: str, blob: str) -> BlobVersion:
        item = self._get(container, blob)
        return BlobVersion(self.account_name, container, blob, item.etag, len(item.data),
                           item.content_type, dict(item.metadata))

    def download(self, container: str, blob: str, dest: Path, if_match: str | None = None
                 ) -> BlobVersion:
        item = self._get(container, blob)
        if if_match is not None and item.etag != if_match:
            raise BlobConditionError(f"{container}/{blob} is not {if_match} any more")
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(item.data)
        return self.get_version(container, blob)

    def upload_file(
        self, container: str, blob: str, src: Path, content_type: str | None = None,
        metadata: Mapping[str, str] | None = None, if_match: str | None = None,
        if_absent: bool = False,
    ) -> BlobVersion:
        return self._put(container, blob, src.read_bytes(), content_type, metadata, if_match,
                         if_absent)

    def upload_json(self, container: str, blob: str, data: Any,
                    metadata: Mapping[str, str] | None = None) -> BlobVersion:
        body = json.dumps(data, indent=2, sort_keys=True).encode()
        return self._put(container, blob, body, "application/json", metadata, None, False)

    def put_bytes(self, container: str, blob: str, data: bytes,
                  metadata: Mapping[str, str] | None = None) -> BlobVersion:
        """A test's own upload (a user's new input version)."""
        return self._put(container, blob, data, None, metadata, None, False)

    def delete(self, container: str, blob: str, if_match: str | None = None) -> None:
        items = self.containers.get(container, {})
        if blob not in items and if_match is None:
            return
        if if_match is not None and (blob not in items or items[blob].etag != if_match):
            raise BlobConditionError(f"{container}/{blob} changed since {if_match}")
        del items[blob]

    def set_tags(self, container: str, blob: str, tags: dict[str, str]) -> None:
        self._get(container, blob).tags = dict(tags)

    def get_tags(self, container: str, blob: str) -> dict[str, str]:
        return dict(self._get(container, blob).tags)

    def share_url(self, container: str, blob: str, minutes: int) -> str:
        return f"memory://{container}/{blob}"

    def read_bytes(self, container: str, blob: str) -> bytes:
        return self._get(container, blob).data

    def _get(self, container: str, blob: str) -> _Blob:
        try:
            return self.containers[container][blob]
        except KeyError:
            raise BlobNotFoundError(f"{container}/{blob} does not exist") from None

    def _put(self, container: str, blob: str, data: bytes, content_type: str | None,
             metadata: Mapping[str, str] | None, if_match: str | None, if_absent: bool
             ) -> BlobVersion:
        if self.before_write is not None:
            hook, self.before_write = self.before_write, None
            hook(container, blob)
        items = self.containers.setdefault(container, {})
        existing = items.get(blob)
        if if_absent and existing is not None:
            raise BlobConditionError(f"{container}/{blob} already exists")
        if if_match is not None and (existing is None or existing.etag != if_match):
            raise BlobConditionError(f"{container}/{blob} changed since {if_match}")
        items[blob] = _Blob(data, f"0x{next(self._etags):X}", content_type, dict(metadata or {}))
        return self.get_version(container, blob)

