"""Local blob-event source: turns new blob versions on Azurite into Prefect events.

Azurite has no Event Grid, so this process lists the watched containers every
``poll_seconds`` and announces each blob version (name + etag) it has not announced before,
with the same event that the Event Grid bridge emits in Azure (``tasks.events``).

Exactly once per version: the state file records a version only after the Prefect server has
accepted its event, so a crash can at worst re-send one event, and that event carries the same
deterministic id, which Prefect's trigger service drops as already seen. On restart the state
file is read back, so blobs uploaded while the watcher was down are announced and old ones are
not repeated.

Run: ``python -m deployments.azurite_watcher`` (``make up`` does).
"""

from __future__ import annotations

import json
import logging
import signal
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import httpx

from gpu.jobdir import atomic_write_json
from tasks.events import BlobVersion, blob_created_event
from tasks.settings import RestyleSettings
from tasks.storage import BlobStore, make_blob_store

logger = logging.getLogger("restyle.watcher")

SOURCE = "azurite-watcher"

EventSink = Callable[[list[dict[str, Any]]], None]
"""Delivers a batch of events; returns only once they are accepted, else raises."""


def prefect_http_sink(api_url: str, timeout: float = 10.0) -> EventSink:
    """POST events to the Prefect server's ``/events`` endpoint and wait for its 204."""
    from prefect.events import Event

    def send(events: list[dict[str, Any]]) -> None:
        body = [Event(**kwargs).model_dump(mode="json") for kwargs in events]
        response = httpx.post(f"{api_url.rstrip('/')}/events", json=body, timeout=timeout)
        response.raise_for_status()

    return send


class BlobWatcher:
    """Announces each new blob version in ``containers`` exactly once."""

    def __init__(
        self,
        store: BlobStore,
        containers: Iterable[str],
        state_path: Path,
        sink: EventSink,
    ) -> None:
        self.store = store
        self.containers = list(containers)
        self.state_path = state_path
        self.sink = sink
        self.announced: dict[str, str] = self._load_state()

    def _load_state(self) -> dict[str, str]:
        if not self.state_path.exists():
            return {}
        return dict(json.loads(self.state_path.read_text())["announced"])

    def _key(self, version: BlobVersion) -> str:
        return f"{version.container}/{version.blob}"

    def poll_once(self) -> list[BlobVersion]:
        """List the containers once and announce every unseen version; return those."""
        new = [
            version
            for container in self.containers
            for version in self.store.list_versions(container)
            if self.announced.get(self._key(version)) != version.etag
        ]
        logger.debug("polled %s: %d new version(s)", self.containers, len(new))
        if not new:
            return []
        self.sink([blob_created_event(version, SOURCE) for version in new])
        for version in new:
            self.announced[self._key(version)] = version.etag
            # %r: a blob name is untrusted; a newline in it must not start a forged log line.
            logger.info("announced %r (etag %s)", f"{version.container}/{version.blob}",
                        version.etag)
        atomic_write_json(self.state_path, {"announced": self.announced})
        return new

    def run(self, poll_seconds: float, stop: threading.Event) -> None:
        """Poll until ``stop`` is set; a failed poll is logged and retried, never fatal."""
        while not stop.is_set():
            try:
                self.poll_once()
            except Exception as exc:  # storage or Prefect briefly down: retry next tick
                logger.warning("poll failed, retrying: %s", exc)
            stop.wait(poll_seconds)


QUIET_LOGGERS = ("azure", "httpx", "httpcore")
"""Libraries that log every HTTP request at INFO: twice a second, that was 13 MB an hour."""


def configure_logging(level: int = logging.INFO) -> None:
    """One line per announced event at INFO; polls and HTTP requests only at DEBUG."""
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(message)s", force=True)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(level, logging.WARNING))


def main() -> None:
    from prefect.settings import PREFECT_API_URL

    configure_logging()
    settings = RestyleSettings()
    store = make_blob_store(settings.storage)
    store.ensure_containers(settings.watcher.containers)
    api_url = PREFECT_API_URL.value()
    if not api_url:
        raise SystemExit("PREFECT_API_URL is not set: the watcher needs a Prefect server")
    watcher = BlobWatcher(
        store, settings.watcher.containers, settings.watcher.state_path, prefect_http_sink(api_url)
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    logger.info("watching %s every %.1fs", settings.watcher.containers,
                settings.watcher.poll_seconds)
    watcher.run(settings.watcher.poll_seconds, stop)


if __name__ == "__main__":
    main()
