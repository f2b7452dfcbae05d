"""The bridge delivering to a real Prefect server that requires an auth string.

A delivery is answered 200 only once the server has the event; when the server is down or
refuses the bridge's credentials the answer is 503, which Event Grid retries.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import httpx
import pytest
from pydantic import SecretStr

from deployments.eventgrid_bridge import create_app
from deployments.prefect_events import PrefectEventsApi, PrefectUnavailableError
from tasks.events import BLOB_CREATED_EVENT
from tasks.settings import BridgeSettings
from tests.deployments.test_eventgrid_bridge import (
    EVENT_GRID_SAMPLE,
    EXPECTED_VERSION,
    SECRET,
    serving,
)
from tests.prefect_server import PrefectServer, running_prefect_server

pytestmark = pytest.mark.slow  # starts a real Prefect server

SETTINGS = BridgeSettings(shared_secret=SECRET)


@pytest.fixture(scope="module")
def prefect(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    with running_prefect_server(tmp_path_factory.mktemp("prefect")) as server:
        yield server


def _deliver(api: PrefectEventsApi, body: object) -> httpx.Response:
    with serving(create_app(SETTINGS, api.post), SETTINGS) as base:
        return httpx.post(f"{base}/api/events?code={SECRET}", json=body, timeout=60)


def test_a_delivery_is_answered_after_prefect_stored_the_event(prefect: PrefectServer) -> None:
    api = PrefectEventsApi(prefect.api_url, auth_string=prefect.auth_string)
    response = _deliver(api, EVENT_GRID_SAMPLE)
    assert response.status_code == 200, response.text
    stored = prefect.wait_for_events(BLOB_CREATED_EVENT, 1)
    assert [e["id"] for e in stored] == [str(EXPECTED_VERSION.event_id)]
    payload = stored[0]["payload"]
    assert (payload["container"], payload["blob"], payload["etag"], payload["source"]) == (
        "videos", "starry_night/clip.mp4", "0x8D4BCC2E4835CD0", "event-grid")


def test_wrong_prefect_credentials_are_a_503_not_a_lost_event(prefect: PrefectServer) -> None:
    api = PrefectEventsApi(prefect.api_url, auth_string="restyle-test:wrong")
    assert _deliver(api, EVENT_GRID_SAMPLE).status_code == 503
    with pytest.raises(PrefectUnavailableError, match="did not accept 1 event"):
        api.post([{"event": BLOB_CREATED_EVENT, "resource": {"prefect.resource.id": "x.y"}}])


def test_prefect_down_is_a_503() -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        down = f"http://127.0.0.1:{sock.getsockname()[1]}/api"
    api = PrefectEventsApi(down, timeout_s=2)
    assert _deliver(api, EVENT_GRID_SAMPLE).status_code == 503


def test_the_api_comes_from_prefects_own_settings() -> None:
    from prefect.settings import (
        PREFECT_API_AUTH_STRING,
        PREFECT_API_KEY,
        PREFECT_API_URL,
        temporary_settings,
    )

    with temporary_settings(updates={PREFECT_API_URL: "https://api.prefect.cloud/api/x",
                                     PREFECT_API_KEY: "pnu_key", PREFECT_API_AUTH_STRING: None}):
        api = PrefectEventsApi.from_prefect_settings()
    assert api.api_url == "https://api.prefect.cloud/api/x"
    assert isinstance(api.api_key, SecretStr) and api.api_key.get_secret_value() == "pnu_key"
    assert "pnu_key" not in repr(api)
    with temporary_settings(updates={PREFECT_API_URL: None}), pytest.raises(
        ValueError, match="PREFECT_API_URL"
    ):
        PrefectEventsApi.from_prefect_settings()
