"""The Event Grid bridge over real HTTP: uvicorn on an ephemeral 127.0.0.1 port, httpx client.

Payloads follow Microsoft's documented samples for ``Microsoft.Storage.BlobCreated`` in the
Event Grid schema and in CloudEvents 1.0 (learn.microsoft.com, "Azure Blob Storage as an Event
Grid source"), with the container and blob changed to ones restyle watches. Most tests record
what the bridge posts; those at the end post to a real Prefect server
(test_prefect_events.py) or check Entra ID tokens (test_bridge_auth.py).
"""

from __future__ import annotations

import copy
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from uvicorn.logging import AccessFormatter

from deployments.eventgrid_bridge import ConfirmedIds, create_app, uvicorn_config
from deployments.eventgrid_schema import BadRequest, load_json, parse_blob_subject
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
    """The ``post`` the bridge calls: records confirmed events, fails on demand like Prefect."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.calls = 0
        self.fail_on_call: int | None = None

    def __call__(self, events: list[dict[str, Any]]) -> None:
        self.calls += 1
        if self.fail_on_call == self.calls:
            raise RuntimeError("prefect unreachable at http://user:pw@internal:4200")
        self.events.extend(events)


@contextmanager
def serving(app: Starlette, settings: BridgeSettings, **options: Any) -> Iterator[str]:
    """Serve ``app`` with the bridge's uvicorn configuration; yield its base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    srv = uvicorn.Server(uvicorn_config(app, settings, **options))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not srv.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        srv.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, Recorder]]:
    recorder = Recorder()
    settings = BridgeSettings(shared_secret=SECRET, max_body_bytes=64 * 1024, dedupe_capacity=100)
    with serving(create_app(settings, recorder), settings) as base:
        yield base, recorder


@pytest.fixture
def bridge(server: tuple[str, Recorder]) -> Iterator[tuple[httpx.Client, Recorder]]:
    base, recorder = server
    recorder.events.clear()
    recorder.calls, recorder.fail_on_call = 0, None
    with httpx.Client(base_url=base, timeout=10) as client:
        yield client, recorder


URL = f"/api/events?code={SECRET}"


def _post(client: httpx.Client, body: Any, content_type: str = "application/json",
          url: str = URL) -> httpx.Response:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post(url, content=raw, headers={"Content-Type": content_type})


def _ok(posted: int = 1, duplicates: int = 0, ignored: int = 0) -> dict[str, Any]:
    return {"posted": posted, "duplicates": duplicates, "ignored": ignored, "rejected": []}


def _with(**changes: Any) -> list[dict[str, Any]]:
    event = copy.deepcopy(EVENT_GRID_SAMPLE[0])
    event["id"] = f"id-{time.monotonic_ns()}"
    event.update(changes)
    return [event]


def test_event_grid_sample_emits_the_watchers_event(bridge: tuple[httpx.Client, Recorder]) -> None:
    client, recorder = bridge
    response = _post(client, EVENT_GRID_SAMPLE)
    assert response.status_code == 200, response.text
    assert response.json() == _ok()
    assert recorder.events == [blob_created_event(EXPECTED_VERSION, "event-grid")]
    assert recorder.events[0]["payload"]["etag"] == "0x8D4BCC2E4835CD0"


def test_cloudevents_structured_and_batch(bridge: tuple[httpx.Client, Recorder]) -> None:
    client, recorder = bridge
    single = _post(client, CLOUD_EVENT_SAMPLE, "application/cloudevents+json; charset=utf-8")
    assert single.status_code == 200 and single.json()["posted"] == 1
    other = {**CLOUD_EVENT_SAMPLE, "id": "ce-2",
             "subject": "/blobServices/default/containers/styles/blobs/mosaic.jpg"}
    batch = _post(client, [other], "application/cloudevents-batch+json")
    assert batch.status_code == 200 and batch.json()["posted"] == 1
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
    assert response.status_code == 200 and response.json()["posted"] == 1
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


def test_duplicates_are_posted_once(bridge: tuple[httpx.Client, Recorder]) -> None:
    client, recorder = bridge
    events = _with(id="dup-1")
    first = _post(client, events + events)  # repeated inside one delivery ...
    again = _post(client, events)  # ... and redelivered after Prefect confirmed it
    assert first.json() == _ok(posted=1, duplicates=1)
    assert again.json() == _ok(posted=0, duplicates=1)
    assert len(recorder.events) == 1


def test_confirmed_ids_forget_the_oldest() -> None:
    ids = ConfirmedIds(capacity=2)
    ids.add("a")
    ids.add("b")
    assert "a" in ids  # touching a makes b the least recently seen
    ids.add("c")
    assert "b" not in ids and "a" in ids and "c" in ids


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
    assert response.json() == _ok(posted=0, ignored=3)
    assert recorder.events == []


def test_prefect_failure_is_a_generic_503_and_the_retry_delivers(
    bridge: tuple[httpx.Client, Recorder], caplog: pytest.LogCaptureFixture
) -> None:
    client, recorder = bridge
    events = _with(id="retry-me")
    recorder.fail_on_call = 1
    with caplog.at_level(logging.ERROR, logger="restyle.eventgrid_bridge"):
        failed = _post(client, events)
    assert failed.status_code == 503  # Event Grid retries 5xx; a 200 here would lose the event
    assert failed.json() == {"error": "temporarily unavailable"}  # nothing about the cause leaks
    assert "retry-me" in caplog.text and "prefect unreachable" in caplog.text
    retried = _post(client, events)
    assert retried.json() == _ok() and len(recorder.events) == 1


def test_each_event_of_a_batch_is_posted_on_its_own(bridge: tuple[httpx.Client, Recorder]) -> None:
    client, recorder = bridge
    first = _with(id="batch-1", subject=SUBJECT.replace("clip.mp4", "one.mp4"))
    second = _with(id="batch-2", subject=SUBJECT.replace("clip.mp4", "two.mp4"))
    recorder.fail_on_call = 2  # Prefect confirms the first event, then fails
    assert _post(client, first + second).status_code == 503
    assert [e["payload"]["blob"] for e in recorder.events] == ["starry_night/one.mp4"]
    retried = _post(client, first + second)  # the redelivery skips what Prefect confirmed
    assert retried.json() == _ok(posted=1, duplicates=1)
    assert [e["payload"]["blob"] for e in recorder.events] == [
        "starry_night/one.mp4", "starry_night/two.mp4"]
    assert recorder.calls == 3  # one request per event: one, two (failed), two


def test_a_bad_event_does_not_cost_the_rest_of_its_batch(
    bridge: tuple[httpx.Client, Recorder],
) -> None:
    client, recorder = bridge
    good = _with(id="good-1")
    bad = _with(id="bad-1", subject="/blobServices/default/containers/videos/blobs/../x.mp4")
    not_an_object = [17]
    response = _post(client, bad + good + not_an_object)
    # The good event is in Prefect; the delivery is refused so that Event Grid dead-letters it,
    # keeping the bad events for inspection (re-sending the good one is harmless: same id).
    assert response.status_code == 400
    body = response.json()
    assert body["posted"] == 1 and [r["id"] for r in body["rejected"]] == [None, "bad-1"]
    assert "leaves its container" in body["rejected"][1]["error"]
    assert recorder.events == [blob_created_event(EXPECTED_VERSION, "event-grid")]


@pytest.mark.parametrize("depth", [40, 20_000])  # past the limit; past the decoder's recursion
def test_deeply_nested_json_is_a_400(bridge: tuple[httpx.Client, Recorder], depth: int) -> None:
    client, recorder = bridge
    response = _post(client, b"[" * depth + b"]" * depth)
    assert response.status_code == 400  # not 500, which Event Grid would retry for a day
    assert "nested deeper" in response.json()["error"]
    assert recorder.events == []


def test_json_nested_100000_deep_is_refused_not_crashed() -> None:
    with pytest.raises(BadRequest, match="nested deeper"):
        load_json(b"[" * 100_000 + b"]" * 100_000)
    with pytest.raises(BadRequest, match="nested deeper"):
        load_json(b'{"data": ' + b"[" * 32 + b"1" + b"]" * 32 + b"}")  # 33 levels
    assert load_json(json.dumps(EVENT_GRID_SAMPLE).encode()) == EVENT_GRID_SAMPLE


def test_access_log_lines_are_kept_and_masked(
    bridge: tuple[httpx.Client, Recorder], caplog: pytest.LogCaptureFixture
) -> None:
    client, _ = bridge
    with caplog.at_level(logging.INFO, logger="uvicorn.access"):
        assert _post(client, _with(id="logged-1")).status_code == 200
        deadline = time.monotonic() + 5
        while not [r for r in caplog.records if r.name == "uvicorn.access"]:
            assert time.monotonic() < deadline, "no access log line"
            time.sleep(0.02)
    access = [r for r in caplog.records if r.name == "uvicorn.access"]
    # Formatted by uvicorn's own access formatter, which unpacks the record's arguments.
    formatter = AccessFormatter('%(client_addr)s - "%(request_line)s" %(status_code)s')
    lines = [formatter.format(record) for record in access]
    assert any('"POST /api/events?code=*** HTTP/1.1" 200' in line for line in lines), lines
    assert not any(SECRET in line for line in lines)


def test_other_methods_and_paths(bridge: tuple[httpx.Client, Recorder]) -> None:
    client, _ = bridge
    assert client.get(URL).status_code == 405
    assert client.post("/elsewhere").status_code == 404
    assert client.get("/healthz").json() == {"status": "ok"}


def test_subject_parser_keeps_legitimate_names() -> None:
    subject = "/blobServices/default/containers/videos/blobs/starry_night/My clip (1).v2.mp4"
    assert parse_blob_subject(subject) == ("videos", "starry_night/My clip (1).v2.mp4")


def test_bridge_refuses_to_start_without_a_credential() -> None:
    with pytest.raises(ValueError, match="RESTYLE_BRIDGE__SHARED_SECRET"):
        create_app(BridgeSettings(), lambda events: None)
    with pytest.raises(ValueError, match="audience"):
        create_app(BridgeSettings(entra_tenant_id="tenant"), lambda events: None)
