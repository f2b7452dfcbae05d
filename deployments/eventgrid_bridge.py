"""Event Grid -> Prefect bridge: a webhook that turns BlobCreated into ``restyle.blob.created``.

Azure Event Grid delivers ``Microsoft.Storage.BlobCreated`` from the data account to this
endpoint in either schema (:mod:`deployments.eventgrid_schema`). Each accepted blob becomes
exactly the Prefect event the local Azurite watcher emits (:func:`tasks.events.blob_created_event`
with ``source="event-grid"``), so the deployment trigger in ``prefect.yaml`` serves both.

Nothing is acknowledged before Prefect has it: each event is posted to the Prefect API on its own
(:mod:`deployments.prefect_events`) and the API's confirmation is awaited before the next, and
the delivery is answered 200 only once every event of it is confirmed. Event ids in Prefect are
derived from the blob version, so an event posted twice (a retried delivery whose first attempt
got halfway) is one event to Prefect's triggers.

Endpoint: ``POST /api/events`` (and ``OPTIONS`` for the CloudEvents handshake), authorized by an
Entra ID bearer token or ``?code=<shared secret>`` (:mod:`deployments.bridge_auth`).

Responses (Event Grid retries 5xx, 408 and 429; it dead-letters other 4xx without retrying):

====  =====================================================================================
200   every event handled: BlobCreated for watched blobs posted and confirmed; other event
      types and blobs outside the allowed containers/extensions acknowledged and ignored
200   ``SubscriptionValidationEvent``: ``{"validationResponse": <code>}``
200   ``OPTIONS`` with ``WebHook-Request-Origin``: ``WebHook-Allowed-Origin`` + ``-Rate``
400   the body is unreadable (not JSON, nested too deep, wrong shape): nothing is posted; or
      some events of the batch are malformed: the others were posted first, and the refused
      ones are listed, so the delivery lands in the dead-letter container for inspection
401   no or unverifiable credential;  403  wrong code, a token without the app role, or a
      handshake from another origin;  405  other methods;  413  body larger than
      ``bridge.max_body_bytes`` (counted while reading);  415  other content types
503   Prefect did not confirm an event, or the tenant's token keys could not be fetched: the
      delivery is retried, and events confirmed before are skipped (generic body)
====  =====================================================================================

Run: ``python -m deployments.eventgrid_bridge`` with ``PREFECT_API_URL`` (plus
``PREFECT_API_KEY`` or ``PREFECT_API_AUTH_STRING``) and the ``RESTYLE_BRIDGE__*`` credentials;
uvicorn listens on ``bridge.host:bridge.port`` (127.0.0.1:8088); put it behind TLS termination.
Access log lines keep the query string with ``code=***``.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import PurePosixPath
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from deployments.bridge_auth import (
    AuthUnavailable,
    EntraTokenVerifier,
    Forbidden,
    SharedSecret,
    Unauthorized,
    bearer_token,
)
from deployments.eventgrid_schema import (
    ACCEPTED_MEDIA,
    BLOB_CREATED,
    SUBSCRIPTION_VALIDATION,
    BadEvent,
    BadRequest,
    blob_version_from,
    event_id,
    events_from,
    normalize,
)
from deployments.prefect_events import PrefectEventsApi
from tasks.events import BlobVersion, blob_created_event
from tasks.settings import BridgeSettings, RestyleSettings

logger = logging.getLogger("restyle.eventgrid_bridge")

SOURCE = "event-grid"
ALLOWED_ORIGINS = frozenset({"eventgrid.azure.net"})
ALLOWED_RATE = "120"

PostEvents = Callable[[list[dict[str, Any]]], None]
"""Delivers events (``prefect.events.Event`` keyword arguments); returns once confirmed."""


class ConfirmedIds:
    """The last ``capacity`` event ids Prefect confirmed, oldest forgotten first (thread-safe).

    Only confirmed ids are remembered, so a redelivery of an event whose post failed is posted.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def __contains__(self, event_id: str) -> bool:
        with self._lock:
            if event_id in self._ids:
                self._ids.move_to_end(event_id)
                return True
            return False

    def add(self, event_id: str) -> None:
        with self._lock:
            self._ids[event_id] = None
            self._ids.move_to_end(event_id)
            while len(self._ids) > self.capacity:
                self._ids.popitem(last=False)


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


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def _error(status: int, message: str, **headers: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers or None)


def create_app(
    settings: BridgeSettings | RestyleSettings,
    post: PostEvents | None = None,
    entra: EntraTokenVerifier | None = None,
) -> Starlette:
    """The bridge as an ASGI app.

    Args:
        settings: Bridge settings (or the whole tree, whose ``bridge`` is used).
        post: Delivers events and returns once Prefect confirmed them; defaults to posting to
            the Prefect API this process's Prefect settings name.
        entra: Token verifier; defaults to one built from ``bridge.entra_*`` when those are set.
    """
    bridge = settings.bridge if isinstance(settings, RestyleSettings) else settings
    secret_text = bridge.shared_secret.get_secret_value() if bridge.shared_secret else ""
    secret = SharedSecret(secret_text) if secret_text else None
    if entra is None and bridge.entra_tenant_id:
        entra = EntraTokenVerifier(bridge.entra_tenant_id, bridge.entra_audience,
                                   bridge.entra_role)
    if secret is None and entra is None:
        raise ValueError(
            "the bridge has no credential to check: set RESTYLE_BRIDGE__ENTRA_TENANT_ID and "
            "RESTYLE_BRIDGE__ENTRA_AUDIENCE (Entra ID delivery) or RESTYLE_BRIDGE__SHARED_SECRET"
        )
    if post is None:
        post = PrefectEventsApi.from_prefect_settings().post
    confirmed = ConfirmedIds(bridge.dedupe_capacity)
    containers = set(bridge.allowed_containers)
    extensions = {ext.lower() for ext in bridge.allowed_extensions}

    def masked(text: str) -> str:
        return (text.replace(secret_text, "***") if secret_text else text)[:500]

    async def authorize(request: Request) -> Response | None:
        token = bearer_token(request.headers.get("authorization"))
        code = request.query_params.get("code")
        challenge = {"WWW-Authenticate": "Bearer"} if entra else {}
        try:
            if token is not None and entra is not None:
                await run_in_threadpool(entra.verify, token)
            elif code is not None and secret is not None:
                secret.check(code)
            else:
                raise Unauthorized("no credential")
        except Unauthorized as exc:
            logger.warning("refused a delivery: %s", exc)
            return _error(401, "unauthorized", **challenge)
        except Forbidden as exc:
            logger.warning("refused a delivery: %s", exc)
            return _error(403, "forbidden")
        except AuthUnavailable as exc:
            logger.error("cannot check the delivery's token: %s", exc)
            return _error(503, "temporarily unavailable")
        return None

    async def handshake(request: Request) -> Response:
        # With Entra ID the validation request may come without a token; answering it grants
        # nothing, since every POST is still checked.
        has_credential = "authorization" in request.headers or "code" in request.query_params
        if has_credential or entra is None:
            denied = await authorize(request)
            if denied:
                return denied
        origin = request.headers.get("webhook-request-origin", "").strip().lower()
        if origin not in ALLOWED_ORIGINS:
            return _error(403, "origin not allowed")
        return Response(
            status_code=200,
            headers={
                "WebHook-Allowed-Origin": origin,
                "WebHook-Allowed-Rate": ALLOWED_RATE,
                "Allow": "POST, OPTIONS",
            },
        )

    async def deliver(event_id_: str, version: BlobVersion) -> None:
        await run_in_threadpool(post, [blob_created_event(version, SOURCE)])
        confirmed.add(event_id_)
        logger.info("posted %s/%s (etag %s, event %s)", version.container, version.blob,
                    version.etag, event_id_)

    async def receive(request: Request) -> Response:
        denied = await authorize(request)
        if denied:
            return denied
        media = _media_type(request)
        if media not in ACCEPTED_MEDIA:
            return _error(415, "unsupported content type")
        try:
            body = await _read_body(request, bridge.max_body_bytes)
        except BodyTooLarge:
            return _error(413, "body too large")
        try:
            raw_events = events_from(media, request.headers, body)
        except BadRequest as exc:
            return _error(400, str(exc))
        rejected: list[dict[str, Any]] = []
        events: list[dict[str, Any]] = []
        for raw in raw_events:
            try:
                events.append(normalize(raw))
            except BadEvent as exc:
                rejected.append({"id": event_id(raw), "error": str(exc)})
        validation = next((e for e in events if e["type"] == SUBSCRIPTION_VALIDATION), None)
        if validation:
            data = validation["data"]
            code = data.get("validationCode") if isinstance(data, dict) else None
            if not isinstance(code, str) or not code:
                return _error(400, "validation event: 'data.validationCode' must be a string")
            logger.info("answered the Event Grid subscription validation handshake")
            return JSONResponse({"validationResponse": code})
        wanted: list[tuple[str, BlobVersion]] = []
        ignored = duplicates = 0
        for event in events:
            if event["type"] != BLOB_CREATED:
                ignored += 1
                continue
            try:
                version = blob_version_from(event["topic"], event["subject"], event["data"])
            except BadEvent as exc:
                rejected.append({"id": event["id"], "error": str(exc)})
                continue
            suffix = PurePosixPath(version.blob).suffix.lower()
            if version.container not in containers or suffix not in extensions:
                ignored += 1
            elif event["id"] in confirmed or any(event["id"] == i for i, _ in wanted):
                duplicates += 1
            else:
                wanted.append((event["id"], version))
        posted = 0
        for event_id_, version in wanted:
            try:
                await deliver(event_id_, version)
            except Exception as exc:
                # No traceback: exception text can carry anything, so it is masked and short.
                cause = f"{exc}; {exc.__cause__}" if exc.__cause__ else str(exc)
                logger.error("posting event %s to Prefect failed, Event Grid will retry: %s",
                             event_id_, masked(f"{type(exc).__name__}: {cause}"))
                return _error(503, "temporarily unavailable")
            posted += 1
        for refusal in rejected:
            logger.warning("refused event %s: %s", refusal["id"], refusal["error"])
        summary = {"posted": posted, "duplicates": duplicates, "ignored": ignored,
                   "rejected": rejected}
        return JSONResponse(summary, status_code=400 if rejected else 200)

    async def health(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def failure(_: Request, exc: Exception) -> Response:
        logger.error("unhandled %s in the bridge", type(exc).__name__)
        return _error(500, "internal error")

    return Starlette(
        routes=[
            Route("/api/events", receive, methods=["POST"]),
            Route("/api/events", handshake, methods=["OPTIONS"]),
            Route("/healthz", health, methods=["GET"]),
        ],
        exception_handlers={Exception: failure},
    )


class RedactSecretQuery(logging.Filter):
    """Masks the ``code`` query parameter (the shared secret) in uvicorn's access log lines.

    Uvicorn's access formatter unpacks ``record.args`` (client, method, path, version, status),
    so the mask is applied inside the arguments and the line keeps its shape.
    """

    _CODE = re.compile(r"([?&]code=)[^&\s\"]*")

    def _mask(self, value: Any) -> Any:
        return self._CODE.sub(r"\1***", value) if isinstance(value, str) else value

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self._mask(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(self._mask(arg) for arg in record.args)
        elif isinstance(record.args, dict):
            record.args = {key: self._mask(arg) for key, arg in record.args.items()}
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
