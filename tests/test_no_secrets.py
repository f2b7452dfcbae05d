"""No credential leaves the Azure code paths: logs, parameters, artifacts, error reports.

Each test drives a real code path with real secrets in play (Azurite's account key behind the
blob client, a SAS signature printed by a job, a user-delegation SAS, the bridge's shared secret
in its URL), collects everything those paths emit - log records at DEBUG from every logger,
results, exceptions, rendered job specs, HTTP responses, serialized settings - and greps it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import uvicorn
from azure.storage.blob import ContainerClient

from deployments.eventgrid_bridge import create_app, uvicorn_config
from tasks.compute.azureml.redaction import redact
from tasks.compute.azureml.spec import render_job_yaml
from tasks.compute.base import GpuJobError
from tasks.settings import BridgeSettings, RestyleSettings
from tasks.storage_links import user_delegation_read_url
from tests.deployments.test_eventgrid_bridge import EVENT_GRID_SAMPLE, VALIDATION_EVENT
from tests.tasks.compute.azureml.test_backend import (  # noqa: F401 - fixtures used by name
    AZURITE_KEY,
    LEAKY_LOG,
    Script,
    _DelegationService,
    blob_service,
    container,
    make_backend,
    make_job,
)

LEAKED_SIGNATURE = LEAKY_LOG.split("sig=")[1]
BRIDGE_SECRET = "s3cr3t-in-the-webhook-url-0d9c"


def assert_clean(text: str, *secrets: str) -> None:
    """No secret appears in ``text``, nor any SAS signature value."""
    for secret in (AZURITE_KEY, LEAKED_SIGNATURE, *secrets):
        assert secret not in text
    for value in [v for part in text.split("sig=")[1:] for v in [part.split("&")[0][:12]]]:
        assert value.startswith("***"), f"unredacted SAS signature near: sig={value}"


@pytest.fixture
def everything(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)  # every logger, including azure-core's HTTP logging
    return caplog


def test_backend_logs_results_errors_and_job_specs_hold_no_secret(
    tmp_path: Path, container: ContainerClient, everything: pytest.LogCaptureFixture  # noqa: F811
) -> None:
    log = logging.getLogger("test.no_secrets")
    job = make_job(tmp_path / "ok")
    backend, _ = make_backend(
        tmp_path / "ok", container, [Script("preempt", chunks=1), Script("complete")], log
    )
    result = backend.run(job)
    failing = make_job(tmp_path / "bad", chunks=2)
    backend_bad, _ = make_backend(tmp_path / "bad", container, [Script("fail", chunks=1)], log)
    with pytest.raises(GpuJobError) as caught:
        backend_bad.run(failing)

    spec = render_job_yaml(job, backend.settings, tmp_path / "code")
    produced = "\n".join(
        [
            everything.text,
            json.dumps(dataclasses.asdict(result)),  # what the flow turns into artifacts
            str(caught.value),
            caught.value.log_tail,  # what the flow puts in its error report
            spec,  # the parameters Azure ML receives
            json.dumps(dataclasses.asdict(job), default=str),
        ]
    )
    assert "processed chunks" in produced and "sig=***" in produced  # the leak was there
    assert_clean(produced)


AZURITE_CONNECTION = (
    "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
    f"AccountKey={AZURITE_KEY};BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;"
)


def test_settings_serialize_without_their_secrets() -> None:
    # Flows hand the settings tree to tasks: Prefect records it as task run parameters.
    settings = RestyleSettings(
        storage={"connection_string": AZURITE_CONNECTION}, bridge={"shared_secret": BRIDGE_SECRET}
    )
    dumped = settings.model_dump_json() + repr(settings) + str(settings.model_dump())
    assert settings.storage.connection_string.get_secret_value() == AZURITE_CONNECTION
    assert_clean(dumped, BRIDGE_SECRET)


def test_storage_credential_errors_never_repeat_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    from tasks.storage import make_blob_store

    monkeypatch.setenv("RESTYLE_STORAGE__CONNECTION_STRING", AZURITE_CONNECTION)
    monkeypatch.setenv("RESTYLE_STORAGE__ACCOUNT_URL", "https://restyledata.blob.core.windows.net")
    with pytest.raises(ValidationError) as conflict:
        RestyleSettings()
    monkeypatch.delenv("RESTYLE_STORAGE__ACCOUNT_URL")
    monkeypatch.setenv("RESTYLE_STORAGE__IDENTITY_CLIENT_ID", "11111111-2222-3333-4444-5555")
    with pytest.raises(ValidationError) as identity:
        RestyleSettings()
    monkeypatch.delenv("RESTYLE_STORAGE__IDENTITY_CLIENT_ID")
    malformed = RestyleSettings(storage={"connection_string": f"AccountKey={AZURITE_KEY};nonsense"})
    with pytest.raises(ValueError) as unusable:
        make_blob_store(malformed.storage)
    messages = [str(conflict.value), str(identity.value), str(unusable.value)]
    assert "RESTYLE_STORAGE__ACCOUNT_URL" in messages[0] and "malformed" in messages[2]
    assert_clean("\n".join(messages))


def test_user_delegation_sas_is_redacted_wherever_it_is_printed(
    everything: pytest.LogCaptureFixture,
) -> None:
    url = user_delegation_read_url(_DelegationService(), "stylized", "a/b.mp4", minutes=10)
    signature = parse_qs(urlsplit(url).query)["sig"][0]
    logging.getLogger("test.no_secrets").info("result ready: %s", redact(url))
    assert signature not in everything.text and "sig=***" in everything.text
    assert_clean(everything.text, signature)


@pytest.fixture
def bridge_url() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    emitted: list[dict[str, Any]] = []

    def post(events: list[dict[str, Any]]) -> None:
        if any(e["payload"]["blob"].endswith("boom.mp4") for e in events):
            raise RuntimeError(f"cannot reach Prefect (asked with code={BRIDGE_SECRET})")
        emitted.extend(events)

    settings = BridgeSettings(shared_secret=BRIDGE_SECRET)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn_config(create_app(settings, post), settings, log_level="debug"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", emitted
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def test_bridge_never_logs_or_returns_its_secret(
    bridge_url: tuple[str, list[dict[str, Any]]], everything: pytest.LogCaptureFixture
) -> None:
    base, emitted = bridge_url
    boom = json.loads(json.dumps(EVENT_GRID_SAMPLE))
    boom[0]["id"] = "boom"
    boom[0]["subject"] = "/blobServices/default/containers/videos/blobs/boom.mp4"
    responses = []
    with httpx.Client(base_url=base, timeout=10) as client:
        for code in (BRIDGE_SECRET, "wrong", BRIDGE_SECRET + "x"):
            for body in (EVENT_GRID_SAMPLE, VALIDATION_EVENT, boom, b"{bad json"):
                raw = body if isinstance(body, bytes) else json.dumps(body).encode()
                responses.append(
                    client.post(
                        f"/api/events?code={code}", content=raw,
                        headers={"Content-Type": "application/json"},
                    )
                )
        responses.append(
            client.options(
                f"/api/events?code={BRIDGE_SECRET}",
                headers={"WebHook-Request-Origin": "eventgrid.azure.net"},
            )
        )
    assert [r.status_code for r in responses[:4]] == [200, 200, 503, 400]
    assert len(emitted) == 1
    # The test's own HTTP client logs the URL it was given; only the server side is judged.
    server_side = "\n".join(
        f"{r.name} {r.getMessage()} {r.exc_text or ''}"
        for r in everything.records
        if not r.name.startswith(("httpx", "httpcore"))
    )
    assert "/api/events?code=*** HTTP/1.1" in server_side  # access lines exist, masked
    produced = "\n".join(
        [server_side, json.dumps(emitted, default=str)]
        + [f"{r.status_code} {dict(r.headers)} {r.text}" for r in responses]
    )
    assert "posted videos/starry_night/clip.mp4" in server_side  # the bridge did log
    assert_clean(produced, BRIDGE_SECRET)
