"""The Event Grid bridge over real HTTP: uvicorn on an ephemeral 127.0.0.1 port, httpx client.

Payloads follow Microsoft's documented samples for ``Microsoft.Storage.BlobCreated`` in the
Event Grid schema and in CloudEvents 1.0 (learn.microsoft.com, "Azure Blob Storage as an Event
Grid source"), with the container and blob changed to ones restyle watches.
"""

from __future__ import annotations

import copy
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn

from deployments.eventgrid_bridge import (
    RecentIds,
    create_app,
    parse_blob_subject,
    uvicorn_config,
)
from tasks.events import BlobVersion, blob_created_event
from tasks.settings import BridgeSettings

SECRET = "bridge-secret-7f3a9c1e5b"
TOPIC = (
    "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/Storage"
    "/providers/Microsoft.Storage/storageAccounts/mystorageaccount"
)
DATA = {
    "api": "PutBlockList",
    "clientRequestId": "6d79dbfb-0e37-4fc4-981f-442c9ca65760",
    "requestId": "831e1650-001e-001b-66ab-eeb76e000000",
    "eTag": "\"0x8D4BCC2E4835CD0\"",
    "contentType": "video/mp4",
    "contentLength": 524288,
    "blobType": "BlockBlob",
    "url": "https://mystorageaccount.blob.core.windows.net/videos/starry_night/clip.mp4",
    "sequencer": "00000000000004420000000000028963",
    "storageDiagnostics": {"batchId": "b68529f3-68cd-4744-baa4-3c0498ec19f0"},
}
SUBJECT = "/blobServices/default/containers/videos/blobs/starry_night/clip.mp4"
EVENT_GRID_SAMPLE = [
    {
        "topic": TOPIC,
        "subject": SUBJECT,
        "eventType": "Microsoft.Storage.BlobCreated",
        "eventTime": "2017-06-26T18:41:00.9584103Z",
        "id": "831e1650-001e-001b-66ab-eeb76e069631",
        "data": DATA,
        "dataVersion": "",
        "metadataVersion": "1",
    }
]
CLOUD_EVENT_SAMPLE = {
    "source": TOPIC,
    "subject": SUBJECT,
    "type": "Microsoft.Storage.BlobCreated",
    "time": "2017-06-26T18:41:00.9584103Z",
    "id": "831e1650-001e-001b-66ab-eeb76e069632",
    "data": DATA,
    "specversion": "1.0",
}
VALIDATION_EVENT = [
    {
        "id": "2d1781af-3a4c-4d7c-bd0c-e34b19da4e66",
        "topic": TOPIC,
        "subject": "",
        "data": {
            "validationCode": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6",
            "validationUrl": "https://rp-eastus2.eventgrid.azure.net:553/eventsubscriptions/x",
        },
        "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
        "eventTime": "2018-01-25T22:12:19.4556811Z",
        "metadataVersion": "1",
        "dataVersion": "1",
    }
]
EXPECTED_VERSION = BlobVersion(
    account="mystorageaccount", container="videos", blob="starry_night/clip.mp4",
    etag="0x8D4BCC2E4835CD0", size=524288, content_type="video/mp4",
)


class Recorder:
    """The ``emit`` the bridge calls; fails on demand to exercise the 500 path."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.fail_next = False

    def __call__(self, **kwargs: Any) -> None:
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("prefect unreachable at http://user:pw@internal:4200")
        self.events.append(kwargs)


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, Recorder]]:
    recorder = Recorder()
    settings = BridgeSettings(shared_secret=SECRET, max_body_bytes=64 * 1024, dedupe_capacity=100)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    srv = uvicorn.Server(uvicorn_config(create_app(settings, recorder), settings))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not srv.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}", recorder
    finally:
        srv.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture
def bridge(server: tuple[str, Recorder]) -> Iterator[tuple[httpx.Client, Recorder]]:
    base, recorder = server
    recorder.events.clear()
    with httpx.Client(base_url=base, timeout=10) as client:
        yield client, recorder


URL = f"/api/events?code={SECRET}"


def _post(client: httpx.Client, body: Any, content_type: str = "application/json",
          url: str = URL) -> httpx.Response:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post(url, content=raw, headers={"Content-Type": content_type})


def _with(**changes: Any) -> list[dict[str, Any]]:
    event = copy.deepcopy(EVENT_GRID_SAMPLE[0])
    event["id"] = f"id-{time.monotonic_ns()}"
    event.update(changes)
    return [event]


def test_event_grid_sample_emits_the_watchers_event(bridge: tuple[httpx.Client, Recorder]) -> None:
    client, recorder = bridge
    response = _post(client, EVENT_GRID_SAMPLE)
    assert response.status_code == 200, response.text
    assert response.json() == {"emitted": 1, "duplicates": 0, "ignored": 0}
    assert recorder.events == [blob_created_event(EXPECTED_VERSION, "event-grid")]
    assert recorder.events[0]["payload"]["etag"] == "0x8D4BCC2E4835CD0"


def test_cloudevents_structured_and_batch(bridge: tuple[httpx.Client, Recorder]) -> None:
    client, recorder = bridge
    single = _post(client, CLOUD_EVENT_SAMPLE, "application/cloudevents+json; charset=utf-8")
    assert single.status_code == 200 and single.json()["emitted"] == 1
    other = {**CLOUD_EVENT_SAMPLE, "id": "ce-2",
             "subject": "/blobServices/default/containers/styles/blobs/mosaic.jpg"}
    batch = _post(client, [other], "application/cloudevents-batch+json")
    assert batch.status_code == 200 and batch.json()["emitted"] == 1
    assert recorder.events[0] == blob_created_event(EXPECTED_VERSION, "event-grid")
    assert recorder.events[1]["payload"]["container"] == "styles"
    assert recorder.events[1]["payload"]["blob"] == "mosaic.jpg"


def test_cloudevents_binary_mode(bridge: tuple[httpx.Client, Recorder]) -> None:
    client, recorder = bridge
    headers = {
        "Content-Type": "application/json", "ce-specversion": "1.0", "ce-id": "bin-1",
        "ce-type": "Microsoft.Storage.BlobCreated", "ce-source": TOPIC, "ce-subject": SUBJECT,
    }
    response = client.post(URL, content=json.dumps(DATA), headers=headers)
    assert response.status_code == 200 and response.json()["emitted"] == 1
    assert recorder.events == [blob_created_event(EXPECTED_VERSION, "event-grid")]


def test_subscription_validation_handshake(bridge: tuple[httpx.Client, Recorder]) -> None:
    client, recorder = bridge
    response = _post(client, VALIDATION_EVENT)
    assert response.status_code == 200
    assert response.json() == {"validationResponse": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"}
    assert recorder.events == []


def test_cloudevents_abuse_protection_handshake(bridge: tuple[httpx.Client, Recorder]) -> None:
    client, _ = bridge
    ok = client.options(URL, headers={"WebHook-Request-Origin": "eventgrid.azure.net"})
    assert ok.status_code == 200
    assert ok.headers["WebHook-Allowed-Origin"] == "eventgrid.azure.net"
    assert ok.headers["WebHook-Allowed-Rate"] == "120"
    evil = client.options(URL, headers={"WebHook-Request-Origin": "evil.example"})
    assert evil.status_code == 403
    origin = {"WebHook-Request-Origin": "eventgrid.azure.net"}
    assert client.options("/api/events", headers=origin).status_code == 401


def test_duplicates_are_emitted_once(bridge: tuple[httpx.Client, Recorder]) -> None:
    client, recorder = bridge
    events = _with(id="dup-1")
    first = _post(client, events + events)  # repeated inside one delivery ...
    again = _post(client, events)  # ... and redelivered
    assert first.json() == {"emitted": 1, "duplicates": 1, "ignored": 0}
    assert again.json() == {"emitted": 0, "duplicates": 1, "ignored": 0}
    assert len(recorder.events) == 1


def test_recent_ids_forget_the_oldest() -> None:
    ids = RecentIds(capacity=2)
    assert ids.claim("a") and ids.claim("b") and not ids.claim("a")
    assert ids.claim("c")  # evicts b, the least recently seen
    assert ids.claim("b") and not ids.claim("c")


@pytest.mark.parametrize(
    ("url", "status"),
    [("/api/events", 401), ("/api/events?code=wrong", 403), (f"/api/events?code={SECRET}x", 403)],
)
def test_secret_is_required(bridge: tuple[httpx.Client, Recorder], url: str, status: int) -> None:
    client, recorder = bridge
    assert _post(client, EVENT_GRID_SAMPLE, url=url).status_code == status
    assert recorder.events == []


@pytest.mark.parametrize(
    "subject",
    [
        "/blobServices/default/containers/videos/blobs/../secrets/clip.mp4",
        "/blobServices/default/containers/videos/blobs/a/../../b.mp4",
        "/blobServices/default/containers/videos/blobs//etc/clip.mp4",
        "/blobServices/default/containers/videos/blobs/%2e%2e/%2E%2E/clip.mp4",
        "/blobServices/default/containers/videos/blobs/a%2f..%2f..%2fclip.mp4",
        "/blobServices/default/containers/videos/blobs/%252e%252e/clip.mp4",
        "/blobServices/default/containers/videos/blobs/a\\..\\clip.mp4",
        "/blobServices/default/containers/videos/blobs/clip\u0000.mp4",
        "/blobServices/default/containers/../blobs/clip.mp4",
        "/blobServices/default/containers/videos/clip.mp4",
    ],
)
def test_traversal_in_subject_is_rejected(
    bridge: tuple[httpx.Client, Recorder], subject: str
) -> None:
    client, recorder = bridge
    response = _post(client, _with(subject=subject))
    assert response.status_code == 400, response.text
    assert recorder.events == []


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        (b"{not json", "application/json", 400),
        (b"\xff\xfe\x00", "application/json", 400),
        (b"42", "application/json", 400),
        (b"[]", "application/json", 400),
        (b"[1, 2]", "application/json", 400),
        (b'[{"id": 5, "eventType": "Microsoft.Storage.BlobCreated"}]', "application/json", 400),
        (json.dumps(_with(data={**DATA, "contentLength": "524288"})).encode(), "application/json",
         400),
        (json.dumps(_with(data={**DATA, "contentLength": True})).encode(), "application/json", 400),
        (json.dumps(_with(data="not an object")).encode(), "application/json", 400),
        (json.dumps(_with(topic="/subscriptions/x/providers/Other/thing")).encode(),
         "application/json", 400),
        (json.dumps([CLOUD_EVENT_SAMPLE]).encode(), "application/cloudevents+json", 400),
        (json.dumps({**CLOUD_EVENT_SAMPLE, "specversion": "0.3"}).encode(),
         "application/cloudevents+json", 400),
        (json.dumps(EVENT_GRID_SAMPLE).encode(), "text/plain", 415),
        (json.dumps(EVENT_GRID_SAMPLE).encode(), "application/xml", 415),
    ],
)
def test_malformed_bodies_are_refused_without_emitting(
    bridge: tuple[httpx.Client, Recorder], body: bytes, content_type: str, status: int
) -> None:
    client, recorder = bridge
    response = _post(client, body, content_type)
    assert response.status_code == status, response.text
    assert recorder.events == []


def test_oversized_body_is_refused_while_streaming(bridge: tuple[httpx.Client, Recorder]) -> None:
    client, recorder = bridge
    declared = _post(client, b"[" + b" " * (70 * 1024) + b"]")
    assert declared.status_code == 413

    def chunks() -> Iterator[bytes]:  # no Content-Length: chunked transfer, counted as read
        yield b"["
        for _ in range(100):
            yield b" " * 1024
        yield b"]"

    streamed = client.post(URL, content=chunks(), headers={"Content-Type": "application/json"})
    assert streamed.status_code == 413
    assert recorder.events == []


def test_unknown_types_and_unwatched_blobs_are_acknowledged_and_ignored(
    bridge: tuple[httpx.Client, Recorder],
) -> None:
    client, recorder = bridge
    deleted = _with(eventType="Microsoft.Storage.BlobDeleted")
    other_container = _with(subject="/blobServices/default/containers/stylized/blobs/a/b.mp4")
    other_extension = _with(subject="/blobServices/default/containers/videos/blobs/a/notes.txt")
    response = _post(client, deleted + other_container + other_extension)
    assert response.status_code == 200
    assert response.json() == {"emitted": 0, "duplicates": 0, "ignored": 3}
    assert recorder.events == []


def test_emit_failure_is_a_generic_500_and_the_retry_is_not_dropped(
    bridge: tuple[httpx.Client, Recorder], caplog: pytest.LogCaptureFixture
) -> None:
    client, recorder = bridge
    events = _with(id="retry-me")
    recorder.fail_next = True
    with caplog.at_level(logging.ERROR, logger="restyle.eventgrid_bridge"):
        failed = _post(client, events)
    assert failed.status_code == 500
    assert failed.json() == {"error": "internal error"}  # nothing about the cause leaks
    retried = _post(client, events)  # Event Grid retries 5xx
    assert retried.json()["emitted"] == 1 and len(recorder.events) == 1


def test_other_methods_and_paths(bridge: tuple[httpx.Client, Recorder]) -> None:
    client, _ = bridge
    assert client.get(URL).status_code == 405
    assert client.post("/elsewhere").status_code == 404
    assert client.get("/healthz").json() == {"status": "ok"}


def test_subject_parser_keeps_legitimate_names() -> None:
    subject = "/blobServices/default/containers/videos/blobs/starry_night/My clip (1).v2.mp4"
    assert parse_blob_subject(subject) == ("videos", "starry_night/My clip (1).v2.mp4")


def test_bridge_refuses_to_start_without_a_secret() -> None:
    with pytest.raises(ValueError, match="RESTYLE_BRIDGE__SHARED_SECRET"):
        create_app(BridgeSettings(), lambda **_: None)
