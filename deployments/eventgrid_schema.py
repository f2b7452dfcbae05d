"""Event Grid deliveries, read strictly: the request body to events, each event to a blob version.

Both delivery schemas are understood:

* Event Grid schema: ``application/json``, a JSON array of events;
* CloudEvents 1.0: structured ``application/cloudevents+json`` (one event), batched
  ``application/cloudevents-batch+json`` (an array), or binary mode (``ce-*`` headers).

Two levels of failure, because Event Grid retries neither: :class:`BadRequest` (the body as a
whole cannot be read) refuses the delivery; :class:`BadEvent` refuses one event of a batch, and
the bridge still delivers the others.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote

from tasks.events import BlobVersion

BLOB_CREATED = "Microsoft.Storage.BlobCreated"
SUBSCRIPTION_VALIDATION = "Microsoft.EventGrid.SubscriptionValidationEvent"
MAX_BLOB_NAME = 1024
MAX_JSON_DEPTH = 32
"""Deepest nesting accepted; a BlobCreated event nests four levels."""

ACCEPTED_MEDIA = frozenset(
    {"application/json", "application/cloudevents+json", "application/cloudevents-batch+json"}
)

_SUBJECT = re.compile(
    r"^/blobServices/default/containers/(?P<container>[a-z0-9](?:[a-z0-9-]{1,61}[a-z0-9]))"
    r"/blobs/(?P<blob>.+)$"
)
_ACCOUNT = re.compile(r"/providers/Microsoft\.Storage/storageAccounts/(?P<account>[a-z0-9]{3,24})$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class BadRequest(ValueError):
    """The body as a whole is unusable: not JSON, too deep, or not the shape its type says."""


class BadEvent(ValueError):
    """One event is unacceptable; the rest of its batch is still handled."""


def _string(obj: Mapping[str, Any], key: str, where: str) -> str:
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


def blob_version_from(topic: Any, subject: Any, data: Any) -> BlobVersion:
    """The :class:`BlobVersion` a BlobCreated event describes (both schemas share ``data``)."""
    if not isinstance(topic, str) or not isinstance(subject, str):
        raise BadEvent("BlobCreated: 'topic'/'source' and 'subject' must be strings")
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
            "topic": event.get("source"),
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


def event_id(event: Any) -> str | None:
    """The id of a raw event, when it has a usable one (for reporting a refused event)."""
    if isinstance(event, dict) and isinstance(event.get("id"), str):
        return event["id"][:200]
    return None


def _depth(value: Any) -> int:
    """Nesting depth of parsed JSON (a scalar is 0, ``[]`` is 1), level by level, no recursion."""
    depth, level = 0, [value] if isinstance(value, (dict, list)) else []
    while level:
        depth += 1
        children = [child for item in level
                    for child in (item.values() if isinstance(item, dict) else item)]
        level = [child for child in children if isinstance(child, (dict, list))]
    return depth


def load_json(body: bytes) -> Any:
    """Parse ``body``; anything unreadable, or nested past :data:`MAX_JSON_DEPTH`, is BadRequest."""
    try:
        parsed = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise BadRequest("body is not valid JSON") from None
    except RecursionError:  # the decoder recurses per level: 100,000 '[' exhaust the stack
        raise BadRequest(f"JSON nested deeper than {MAX_JSON_DEPTH} levels") from None
    if _depth(parsed) > MAX_JSON_DEPTH:
        raise BadRequest(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    return parsed


def events_from(media_type: str, headers: Mapping[str, str], body: bytes) -> list[Any]:
    """The raw events a delivery holds, by its content type (CloudEvents binary by headers)."""
    if "ce-specversion" in headers and media_type == "application/json":
        # CloudEvents binary mode: attributes in ce-* headers, the body is the data.
        attrs = {k[3:]: v for k, v in headers.items() if k.startswith("ce-")}
        return [{**attrs, "data": load_json(body)}]
    parsed = load_json(body)
    if media_type == "application/cloudevents+json":
        if not isinstance(parsed, dict):
            raise BadRequest("structured CloudEvent must be a JSON object")
        events = [parsed]
    elif media_type == "application/cloudevents-batch+json":
        if not isinstance(parsed, list):
            raise BadRequest("CloudEvents batch must be a JSON array")
        events = parsed
    else:  # application/json: Event Grid schema (array); a lone object is one event
        events = parsed if isinstance(parsed, list) else [parsed]
    if not events:
        raise BadRequest("no events")
    return events
