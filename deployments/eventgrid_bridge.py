"""Event Grid -> Prefect bridge: a webhook that turns BlobCreated into ``restyle.blob.created``.

Azure Event Grid delivers ``Microsoft.Storage.BlobCreated`` from the data account to this
endpoint, in either schema:

* Event Grid schema: ``application/json``, a JSON array of events;
* CloudEvents 1.0: structured ``application/cloudevents+json`` (one event), batched
  ``application/cloudevents-batch+json`` (an array), or binary mode (``ce-*`` headers).

Each accepted blob becomes exactly the Prefect event the local Azurite watcher emits
(:func:`tasks.events.blob_created_event` with ``source="event-grid"``), so the deployment
trigger in ``prefect.yaml`` serves both.

Endpoint: ``POST /api/events?code=<shared secret>`` (also ``OPTIONS`` for the handshake).

Responses (Event Grid retries 5xx, 408 and 429; it dead-letters other 4xx without retrying):

====  =====================================================================================
200   events accepted; blobs outside the allowed containers/extensions and event types other
      than BlobCreated are acknowledged and ignored (the subscription filter should already
      exclude them; refusing would only make Event Grid retry them for a day)
200   ``SubscriptionValidationEvent``: ``{"validationResponse": <code>}``
200   ``OPTIONS`` with ``WebHook-Request-Origin``: ``WebHook-Allowed-Origin`` + ``-Rate``
400   not JSON, wrong JSON types, missing fields, a subject that is not a blob path or that
      tries to leave its container (``..``, absolute, encoded traversal); nothing is emitted
401   no ``code`` query parameter;  403  wrong ``code`` or handshake from another origin
405   other methods;  413  body larger than ``bridge.max_body_bytes`` (counted while reading)
415   other content types;  500  emitting failed (generic body; Event Grid retries)
====  =====================================================================================

Redeliveries are dropped by event id (a bounded LRU), and the Prefect event id is derived from
the blob version, so a repeat that slips through is deduplicated by Prefect too.

Run: ``RESTYLE_BRIDGE__SHARED_SECRET=... python -m deployments.eventgrid_bridge`` (uvicorn on
``bridge.host:bridge.port``, 127.0.0.1:8088 by default; put it behind TLS termination). The
query string carries the secret, so access log lines are logged with ``code=***``.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import unquote

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tasks.events import BlobVersion, blob_created_event
from tasks.settings import BridgeSettings, RestyleSettings

logger = logging.getLogger("restyle.eventgrid_bridge")

SOURCE = "event-grid"
BLOB_CREATED = "Microsoft.Storage.BlobCreated"
SUBSCRIPTION_VALIDATION = "Microsoft.EventGrid.SubscriptionValidationEvent"
ALLOWED_ORIGINS = frozenset({"eventgrid.azure.net"})
ALLOWED_RATE = "120"
MAX_BLOB_NAME = 1024

_SUBJECT = re.compile(
    r"^/blobServices/default/containers/(?P<container>[a-z0-9](?:[a-z0-9-]{1,61}[a-z0-9]))"
    r"/blobs/(?P<blob>.+)$"
)
_ACCOUNT = re.compile(r"/providers/Microsoft\.Storage/storageAccounts/(?P<account>[a-z0-9]{3,24})$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

Emit = Callable[..., Any]


class BadEvent(ValueError):
    """The request is well-formed HTTP but its events are not acceptable (HTTP 400)."""


class RecentIds:
    """The last ``capacity`` event ids seen, oldest forgotten first (thread-safe)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def claim(self, event_id: str) -> bool:
        """Record ``event_id``; False when it was already recorded (a redelivery)."""
        with self._lock:
            if event_id in self._ids:
                self._ids.move_to_end(event_id)
                return False
            self._ids[event_id] = None
            while len(self._ids) > self.capacity:
                self._ids.popitem(last=False)
            return True

    def release(self, event_id: str) -> None:
        """Forget ``event_id`` so a retry of a delivery that failed is not dropped."""
        with self._lock:
            self._ids.pop(event_id, None)


def _string(obj: dict[str, Any], key: str, where: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value:
        raise BadEvent(f"{where}: '{key}' must be a non-empty string")
    return value


def _safe_blob_name(name: str) -> str:
    """``name`` if it stays inside its container under every decoding, else :class:`BadEvent`."""
    if len(name) > MAX_BLOB_NAME:
        raise BadEvent("blob name too long")
    candidates = [name]
    for _ in range(3):  # double-encoded traversal (%252e%252e) decodes in two steps
        candidates.append(unquote(candidates[-1]))
    for candidate in candidates:
        if _CONTROL.search(candidate) or "\\" in candidate:
            raise BadEvent("blob name contains control characters or backslashes")
        segments = candidate.split("/")
        if candidate.startswith("/") or any(seg in ("", ".", "..") for seg in segments):
            raise BadEvent("blob name leaves its container or has empty path segments")
    return name


def parse_blob_subject(subject: str) -> tuple[str, str]:
    """``(container, blob)`` of ``/blobServices/default/containers/<c>/blobs/<path>``."""
    match = _SUBJECT.match(subject)
    if not match:
        raise BadEvent("subject is not a blob path")
    return match["container"], _safe_blob_name(match["blob"])


def parse_account(topic: str) -> str:
    """Storage account name from an Event Grid topic / CloudEvents source resource id."""
    match = _ACCOUNT.search(topic)
    if not match:
        raise BadEvent("topic/source is not a storage account resource id")
    return match["account"]


def blob_version_from(topic: str, subject: str, data: Any) -> BlobVersion:
    """The :class:`BlobVersion` a BlobCreated event describes (both schemas share ``data``)."""
    if not isinstance(data, dict):
        raise BadEvent("BlobCreated: 'data' must be an object")
    container, blob = parse_blob_subject(subject)
    size = data.get("contentLength")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise BadEvent("BlobCreated: 'data.contentLength' must be a non-negative integer")
    content_type = data.get("contentType")
    if content_type is not None and not isinstance(content_type, str):
        raise BadEvent("BlobCreated: 'data.contentType' must be a string")
    return BlobVersion(
        account=parse_account(topic),
        container=container,
        blob=blob,
        etag=_string(data, "eTag", "BlobCreated data").strip('"'),
        size=size,
        content_type=content_type,
    )


def normalize(event: Any) -> dict[str, Any]:
    """One event of either schema as ``{id, type, topic, subject, data}``."""
    if not isinstance(event, dict):
        raise BadEvent("each event must be a JSON object")
    if "specversion" in event:
        if event["specversion"] != "1.0":
            raise BadEvent("only CloudEvents specversion 1.0 is supported")
        return {
            "id": _string(event, "id", "CloudEvent"),
            "type": _string(event, "type", "CloudEvent"),
            "topic": _string(event, "source", "CloudEvent"),
            "subject": event.get("subject"),
            "data": event.get("data"),
        }
    return {
        "id": _string(event, "id", "Event Grid event"),
        "type": _string(event, "eventType", "Event Grid event"),
        "topic": event.get("topic"),
        "subject": event.get("subject"),
        "data": event.get("data"),
    }


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


class BodyTooLarge(Exception):
    """The request body passed ``bridge.max_body_bytes``."""


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    body = bytearray()
    async for piece in request.stream():
        body += piece
        if len(body) > limit:  # a lying or absent Content-Length is caught here
            raise BodyTooLarge
    return bytes(body)


def _events_from(request: Request, body: bytes) -> list[Any]:
    media = _media_type(request)
    if "ce-specversion" in request.headers and media == "application/json":
        # CloudEvents binary mode: attributes in ce-* headers, the body is the data.
        attrs = {k[3:]: v for k, v in request.headers.items() if k.startswith("ce-")}
        return [{**attrs, "data": json.loads(body)}]
    parsed = json.loads(body)
    if media == "application/cloudevents+json":
        if not isinstance(parsed, dict):
            raise BadEvent("structured CloudEvent must be a JSON object")
        return [parsed]
    if media == "application/cloudevents-batch+json":
        if not isinstance(parsed, list):
            raise BadEvent("CloudEvents batch must be a JSON array")
        return parsed
    # application/json: Event Grid schema (array); a lone object is accepted as one event.
    return parsed if isinstance(parsed, list) else [parsed]


ACCEPTED_MEDIA = frozenset(
    {"application/json", "application/cloudevents+json", "application/cloudevents-batch+json"}
)


def create_app(
    settings: BridgeSettings | RestyleSettings, emit: Emit | None = None
) -> Starlette:
    """The bridge as an ASGI app.

    Args:
        settings: Bridge settings (or the whole tree, whose ``bridge`` is used).
        emit: Called as ``emit(**blob_created_event(...))`` per accepted blob; defaults to
            ``prefect.events.emit_event``.
    """
    bridge = settings.bridge if isinstance(settings, RestyleSettings) else settings
    if bridge.shared_secret is None or not bridge.shared_secret.get_secret_value():
        raise ValueError("bridge.shared_secret is not set (RESTYLE_BRIDGE__SHARED_SECRET)")
    secret_text = bridge.shared_secret.get_secret_value()
    secret = secret_text.encode()
    if emit is None:
        from prefect.events import emit_event

        emit = emit_event
    seen = RecentIds(bridge.dedupe_capacity)
    containers = set(bridge.allowed_containers)
    extensions = {ext.lower() for ext in bridge.allowed_extensions}

    def authorized(request: Request) -> Response | None:
        code = request.query_params.get("code")
        if code is None:
            return JSONResponse({"error": "missing code"}, status_code=401)
        if not hmac.compare_digest(code.encode(), secret):
            return JSONResponse({"error": "forbidden"}, status_code=403)
        return None

    async def handshake(request: Request) -> Response:
        denied = authorized(request)
        if denied:
            return denied
        origin = request.headers.get("webhook-request-origin", "").strip().lower()
        if origin not in ALLOWED_ORIGINS:
            return JSONResponse({"error": "origin not allowed"}, status_code=403)
        return Response(
            status_code=200,
            headers={
                "WebHook-Allowed-Origin": origin,
                "WebHook-Allowed-Rate": ALLOWED_RATE,
                "Allow": "POST, OPTIONS",
            },
        )

    async def receive(request: Request) -> Response:
        denied = authorized(request)
        if denied:
            return denied
        if _media_type(request) not in ACCEPTED_MEDIA:
            return JSONResponse({"error": "unsupported content type"}, status_code=415)
        try:
            body = await _read_body(request, bridge.max_body_bytes)
        except BodyTooLarge:
            return JSONResponse({"error": "body too large"}, status_code=413)
        try:
            events = [normalize(e) for e in _events_from(request, body)]
            if not events:
                raise BadEvent("no events")
            validation = next((e for e in events if e["type"] == SUBSCRIPTION_VALIDATION), None)
            if validation:
                data = validation["data"]
                if not isinstance(data, dict):
                    raise BadEvent("validation event: 'data' must be an object")
                code = _string(data, "validationCode", "validation event")
                logger.info("answered the Event Grid subscription validation handshake")
                return JSONResponse({"validationResponse": code})
            accepted: list[tuple[str, BlobVersion]] = []
            ignored = 0
            for event in events:
                if event["type"] != BLOB_CREATED:
                    ignored += 1
                    continue
                if not isinstance(event["topic"], str) or not isinstance(event["subject"], str):
                    raise BadEvent("BlobCreated: 'topic'/'source' and 'subject' must be strings")
                version = blob_version_from(event["topic"], event["subject"], event["data"])
                suffix = PurePosixPath(version.blob).suffix.lower()
                if version.container not in containers or suffix not in extensions:
                    ignored += 1
                    continue
                accepted.append((event["id"], version))
        except (json.JSONDecodeError, UnicodeDecodeError):
            return JSONResponse({"error": "body is not valid JSON"}, status_code=400)
        except BadEvent as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        emitted = duplicates = 0
        for event_id, version in accepted:
            if not seen.claim(event_id):
                duplicates += 1
                continue
            try:
                await run_in_threadpool(emit, **blob_created_event(version, SOURCE))
            except Exception as exc:
                seen.release(event_id)
                # No traceback: exception text can carry anything, so it is masked and short.
                reason = f"{type(exc).__name__}: {exc}".replace(secret_text, "***")[:500]
                logger.error("emitting the Prefect event for %s failed: %s", event_id, reason)
                return JSONResponse({"error": "internal error"}, status_code=500)
            emitted += 1
            logger.info("emitted %s/%s (etag %s)", version.container, version.blob, version.etag)
        return JSONResponse({"emitted": emitted, "duplicates": duplicates, "ignored": ignored})

    async def health(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def failure(_: Request, exc: Exception) -> Response:
        logger.error("unhandled %s in the bridge", type(exc).__name__)
        return JSONResponse({"error": "internal error"}, status_code=500)

    return Starlette(
        routes=[
            Route("/api/events", receive, methods=["POST"]),
            Route("/api/events", handshake, methods=["OPTIONS"]),
            Route("/healthz", health, methods=["GET"]),
        ],
        exception_handlers={Exception: failure},
    )


class RedactSecretQuery(logging.Filter):
    """Masks the ``code`` query parameter (the shared secret) in uvicorn's access log lines."""

    _CODE = re.compile(r"([?&]code=)[^&\s\"]*")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "code=" in message:
            record.msg, record.args = self._CODE.sub(r"\1***", message), ()
        return True


def uvicorn_config(app: Starlette, bridge: BridgeSettings, **overrides: Any) -> Any:
    """The uvicorn configuration the bridge runs under (tests serve through the same one).

    Access logging stays on for operations, but every access line passes through
    :class:`RedactSecretQuery` first: uvicorn logs the full path, query string included, and
    whether it does so depends on the handlers the host process installs, not on a flag.
    """
    import uvicorn

    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, RedactSecretQuery) for f in access.filters):
        access.addFilter(RedactSecretQuery())
    options: dict[str, Any] = {
        "host": bridge.host,
        "port": bridge.port,
        "lifespan": "off",
        "server_header": False,
        **overrides,
    }
    return uvicorn.Config(app, **options)


def main() -> None:
    """Serve the bridge with uvicorn on ``bridge.host:bridge.port``."""
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", force=True)
    settings = RestyleSettings()
    uvicorn.Server(uvicorn_config(create_app(settings), settings.bridge)).run()


if __name__ == "__main__":
    main()
