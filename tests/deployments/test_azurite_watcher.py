"""The Azurite blob watcher: once per blob version across restarts (against a real Azurite),
and one log line per event."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from deployments.azurite_watcher import QUIET_LOGGERS, SOURCE, BlobWatcher, configure_logging
from tasks.events import BLOB_CREATED_EVENT
from tasks.settings import RestyleSettings
from tasks.storage import AzureBlobStore
from tests.memory_store import MemoryBlobStore


class RecordingSink:
    """Collects delivered events; can be told to refuse, like a Prefect server that is down."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.refuse = False

    def __call__(self, events: list[dict[str, Any]]) -> None:
        if self.refuse:
            raise ConnectionError("prefect unreachable")
        self.events.extend(events)

    def blobs(self) -> list[str]:
        return [e["payload"]["blob"] for e in self.events]


@pytest.fixture
def container(stack_store: AzureBlobStore, unique: str) -> str:
    name = f"watch-{unique}"
    stack_store.ensure_containers([name])
    yield name
    stack_store.client.delete_container(name)


def _upload(store: AzureBlobStore, container: str, blob: str, body: bytes, tmp: Path) -> None:
    path = tmp / "body.bin"
    path.write_bytes(body)
    store.upload_file(container, blob, path)


def test_each_version_is_announced_once_and_survives_restart(
    stack_store: AzureBlobStore, container: str, tmp_path: Path
) -> None:
    state = tmp_path / "state.json"
    sink = RecordingSink()
    watcher = BlobWatcher(stack_store, [container], state, sink)
    _upload(stack_store, container, "a/one.mp4", b"1", tmp_path)
    assert [v.blob for v in watcher.poll_once()] == ["a/one.mp4"]
    assert watcher.poll_once() == []  # nothing new: nothing announced

    # Restart: a new watcher on the same state neither repeats one.mp4 nor misses two.mp4,
    # which was uploaded while no watcher ran.
    _upload(stack_store, container, "two.mp4", b"2", tmp_path)
    restarted = BlobWatcher(stack_store, [container], state, sink)
    assert [v.blob for v in restarted.poll_once()] == ["two.mp4"]

    # Overwriting a blob makes a new version (new etag): announced again.
    _upload(stack_store, container, "a/one.mp4", b"1 again", tmp_path)
    assert [v.blob for v in restarted.poll_once()] == ["a/one.mp4"]
    assert sink.blobs() == ["a/one.mp4", "two.mp4", "a/one.mp4"]

    event = sink.events[0]
    assert event["event"] == BLOB_CREATED_EVENT
    assert event["resource"]["restyle.container"] == container
    assert event["payload"]["source"] == SOURCE
    assert event["id"] != sink.events[2]["id"]  # versions differ, so do ids


def test_refused_delivery_is_retried_not_lost(
    stack_store: AzureBlobStore, container: str, tmp_path: Path
) -> None:
    sink = RecordingSink()
    watcher = BlobWatcher(stack_store, [container], tmp_path / "state.json", sink)
    _upload(stack_store, container, "x.mp4", b"x", tmp_path)
    sink.refuse = True
    with pytest.raises(ConnectionError):
        watcher.poll_once()
    sink.refuse = False
    assert [v.blob for v in watcher.poll_once()] == ["x.mp4"]
    assert sink.blobs() == ["x.mp4"]


def test_same_version_gets_same_event_id(
    stack_store: AzureBlobStore, container: str, tmp_path: Path, stack_settings: RestyleSettings
) -> None:
    _upload(stack_store, container, "y.mp4", b"y", tmp_path)
    first, second = RecordingSink(), RecordingSink()
    BlobWatcher(stack_store, [container], tmp_path / "s1.json", first).poll_once()
    BlobWatcher(stack_store, [container], tmp_path / "s2.json", second).poll_once()
    assert first.events[0]["id"] == second.events[0]["id"]


# --- logging, on an in-memory store (no stack needed) ---------------------------------------


def test_one_info_line_per_event_and_polls_only_at_debug(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = MemoryBlobStore()
    store.put_bytes("videos", "a.mp4", b"a")
    store.put_bytes("videos", "evil\n2026-01-01 restyle.watcher announced 'forged'.mp4", b"b")
    watcher = BlobWatcher(store, ["videos"], tmp_path / "state.json", RecordingSink())
    caplog.set_level(logging.DEBUG, logger="restyle.watcher")
    for _ in range(3):
        watcher.poll_once()
    info = [r for r in caplog.records if r.levelno == logging.INFO]
    assert len(info) == 2  # one per event, none per poll
    assert all("\n" not in r.getMessage() for r in info)  # the forged line stays one line
    assert "\\n2026-01-01" in info[1].getMessage()
    assert sum(r.levelno == logging.DEBUG for r in caplog.records) == 3  # one per poll


def test_http_libraries_log_requests_only_at_debug_level() -> None:
    root = logging.getLogger()
    saved = (root.level, list(root.handlers))
    configure_logging()
    try:
        for name in QUIET_LOGGERS:
            assert not logging.getLogger(name).isEnabledFor(logging.INFO)
        assert logging.getLogger("restyle.watcher").isEnabledFor(logging.INFO)
        assert logging.getLogger("azure.core.pipeline.policies.http_logging_policy"
                                 ).getEffectiveLevel() >= logging.WARNING
    finally:
        for name in QUIET_LOGGERS:
            logging.getLogger(name).setLevel(logging.NOTSET)
        root.setLevel(saved[0])
        root.handlers[:] = saved[1]
