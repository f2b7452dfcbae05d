"""Deliver events to the Prefect API and return only once the API has accepted them.

``prefect.events.emit_event`` queues an event for a background websocket and swallows every
error, so a caller cannot know whether Prefect ever received it. An event source that must not
lose events (the Event Grid bridge answers Event Grid only after this returns) instead posts
them to ``POST /events`` with Prefect's own client, which carries the API key (Prefect Cloud)
or the auth string (a self-hosted server with ``PREFECT_SERVER_API_AUTH_STRING``) and raises
unless the API answers 2xx.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import SecretStr


def _plain(value: SecretStr | str | None) -> str | None:
    return value.get_secret_value() if isinstance(value, SecretStr) else value


class PrefectUnavailableError(RuntimeError):
    """The Prefect API did not accept the events (unreachable, refused or failing)."""


@dataclass(frozen=True)
class PrefectEventsApi:
    """One Prefect API that takes events, with the credentials its clients use.

    Attributes:
        api_url: ``PREFECT_API_URL``: ``http(s)://host/api`` for a server, or Prefect Cloud's
            ``.../accounts/<id>/workspaces/<id>``.
        api_key: Prefect Cloud API key (``PREFECT_API_KEY``), if any.
        auth_string: ``user:password`` of a self-hosted server (``PREFECT_API_AUTH_STRING``).
        timeout_s: Seconds one HTTP attempt may take (Prefect's client retries 429/5xx).
    """

    api_url: str
    api_key: SecretStr | str | None = field(default=None, repr=False)
    auth_string: SecretStr | str | None = field(default=None, repr=False)
    timeout_s: float = 10.0

    def __post_init__(self) -> None:
        for name in ("api_key", "auth_string"):
            value = getattr(self, name)
            if isinstance(value, str):  # Prefect's settings hand out plain strings too
                object.__setattr__(self, name, SecretStr(value) if value else None)

    @classmethod
    def from_prefect_settings(cls) -> PrefectEventsApi:
        """The API this process's Prefect settings name (profile or ``PREFECT_*`` variables)."""
        from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_KEY, PREFECT_API_URL

        api_url = PREFECT_API_URL.value()
        if not api_url:
            raise ValueError("PREFECT_API_URL is not set: events need a Prefect API to go to")
        return cls(api_url, PREFECT_API_KEY.value(), PREFECT_API_AUTH_STRING.value())

    def post(self, events: list[dict[str, Any]]) -> None:
        """Send ``events`` (keyword arguments of ``prefect.events.Event``) in one request.

        Raises:
            PrefectUnavailableError: the API did not confirm them; nothing can be assumed
                delivered, and sending them again is safe when their ids are deterministic.
        """
        from prefect.client.orchestration import SyncPrefectClient
        from prefect.events import Event

        body = [Event(**kwargs).model_dump(mode="json") for kwargs in events]
        client = SyncPrefectClient(
            self.api_url,
            api_key=_plain(self.api_key),
            auth_string=_plain(self.auth_string),
            httpx_settings={"timeout": self.timeout_s},
        )
        try:
            with client:
                client.request("POST", "/events", json=body)  # raises unless 2xx
        except Exception as exc:
            raise PrefectUnavailableError(
                f"the Prefect API did not accept {len(body)} event(s): {type(exc).__name__}"
            ) from exc
