"""A private Azurite blob service for tests that need real blob storage but not the stack.

Import the fixtures into a test module (``from tests.azurite import blob_service, container``);
tests using them are skipped where Azurite is not installed (``npm ci``).
"""

from __future__ import annotations

import re
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.storage.blob import BlobServiceClient, ContainerClient

AZURITE = Path(__file__).resolve().parent.parent / "node_modules" / ".bin" / "azurite-blob"
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
needs_azurite = pytest.mark.skipif(not AZURITE.exists(), reason="Azurite not installed (npm ci)")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def connection_string(port: int) -> str:
    return (
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
        f"AccountKey={AZURITE_KEY};BlobEndpoint=http://127.0.0.1:{port}/devstoreaccount1;"
    )


@pytest.fixture(scope="module")
def blob_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BlobServiceClient]:
    if not AZURITE.exists():
        pytest.skip("Azurite not installed (npm ci)")
    port = _free_port()
    location = tmp_path_factory.mktemp("azurite")
    proc = subprocess.Popen(
        [str(AZURITE), "--blobHost", "127.0.0.1", "--blobPort", str(port), "--location",
         str(location), "--silent", "--skipApiVersionCheck", "--loose", "--disableTelemetry"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail("Azurite did not start")
            time.sleep(0.1)
    try:
        yield BlobServiceClient.from_connection_string(connection_string(port))
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def container(blob_service: BlobServiceClient, request: pytest.FixtureRequest) -> ContainerClient:
    """A fresh container named after the test."""
    name = "jobs-" + re.sub(r"[^a-z0-9]+", "-", request.node.name.lower())[:40].strip("-")
    client = blob_service.get_container_client(name)
    client.create_container()
    return client
