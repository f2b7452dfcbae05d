"""A real, throw-away Prefect server protected by an auth string, for tests that need the API.

It runs ``prefect server start`` on a free 127.0.0.1 port with its own home and SQLite file and
``PREFECT_SERVER_API_AUTH_STRING`` set, as the protected self-hosted setup in
deployments/README.md does, so clients prove they send the auth string. Tests talk to it through
explicit URLs and ``temporary_settings``, never the process-wide Prefect settings, so a local
stack the suite runs beside is untouched.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from prefect.events.worker import EventsWorker

AUTH_STRING = "restyle-test:8c1f0e5a-prefect-auth"


@dataclass(frozen=True)
class PrefectServer:
    api_url: str
    auth_string: str

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.api_url, auth=tuple(self.auth_string.split(":", 1)),
                            timeout=10)

    def events(self, name: str) -> list[dict[str, Any]]:
        """Events called ``name`` that the server has stored so far."""
        with self.client() as client:
            response = client.post("/events/filter",
                                   json={"filter": {"event": {"name": [name]}}, "limit": 50})
            response.raise_for_status()
            return response.json()["events"]

    def wait_for_events(self, name: str, count: int, timeout: float = 30.0) -> list[dict]:
        """Poll until at least ``count`` events called ``name`` are stored (they persist async)."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.events(name)
            if len(found) >= count or time.monotonic() > deadline:
                return found
            time.sleep(0.3)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def running_prefect_server(home: Path, startup_s: float = 90.0) -> Iterator[PrefectServer]:
    """Start the server, wait for its health check, yield it, and stop it."""
    port = _free_port()
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home / 'prefect.db'}",
        "PREFECT_SERVER_API_AUTH_STRING": AUTH_STRING,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "WARNING",
    }
    for name in ("PREFECT_API_URL", "PREFECT_API_KEY", "PREFECT_API_AUTH_STRING"):
        env.pop(name, None)
    log = (home / "server.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
         "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    server = PrefectServer(f"http://127.0.0.1:{port}/api", AUTH_STRING)
    try:
        deadline = time.monotonic() + startup_s
        while True:
            try:
                with server.client() as client:
                    if client.get("/health").status_code == 200:
                        break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"Prefect server did not start; see {home / 'server.log'}")
            time.sleep(0.3)
        yield server
    finally:
        # Prefect keeps one events worker per process, bound to the API it first saw: drain it
        # so later tests' task-run states go to their own server, not this stopped one.
        EventsWorker.drain_all(timeout=10)
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()
