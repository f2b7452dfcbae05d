"""The conditional operations the result rules rely on, the same on Azurite and in memory.

The Azurite half needs the local stack; the in-memory half always runs, so the fake that the
fast tests use is held to the real store's behaviour.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tasks.storage import BlobConditionError, BlobNotFoundError
from tests.memory_store import MemoryBlobStore


@pytest.fixture(params=["memory", pytest.param("azurite", marks=pytest.mark.stack)])
def store(request: pytest.FixtureRequest, unique: str) -> Any:
    if request.param == "memory":
        store = MemoryBlobStore()
    else:
        store = request.getfixturevalue("stack_store")
    store.ensure_containers([f"contract-{unique}"])
    return store


def test_conditional_writes_deletes_and_reads(store: Any, unique: str, tmp_path: Path) -> None:
    container = f"contract-{unique}"
    body = tmp_path / "body"
    body.write_bytes(b"one")
    first = store.upload_file(container, "a/b.mp4", body, metadata={"restyle_source": "x%2Fy"},
                              if_absent=True)
    assert store.get_version(container, "a/b.mp4").metadata == {"restyle_source": "x%2Fy"}
    with pytest.raises(BlobConditionError):
        store.upload_file(container, "a/b.mp4", body, if_absent=True)
    body.write_bytes(b"two")
    second = store.upload_file(container, "a/b.mp4", body, if_match=first.etag)
    assert second.etag != first.etag
    assert store.get_version(container, "a/b.mp4").metadata == {}  # a write replaces metadata
    with pytest.raises(BlobConditionError):  # a stale etag changes nothing
        store.upload_file(container, "a/b.mp4", body, if_match=first.etag)
    with pytest.raises(BlobConditionError):
        store.upload_file(container, "missing.mp4", body, if_match=first.etag)
    with pytest.raises(BlobConditionError):
        store.download(container, "a/b.mp4", tmp_path / "out", if_match=first.etag)
    assert not (tmp_path / "out").exists()
    store.download(container, "a/b.mp4", tmp_path / "out", if_match=second.etag)
    assert (tmp_path / "out").read_bytes() == b"two"
    with pytest.raises(BlobConditionError):
        store.delete(container, "a/b.mp4", if_match=first.etag)
    store.delete(container, "a/b.mp4", if_match=second.etag)
    with pytest.raises(BlobNotFoundError):
        store.get_version(container, "a/b.mp4")
    store.delete(container, "a/b.mp4")  # deleting what is gone is fine
