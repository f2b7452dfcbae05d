"""Entra ID-protected delivery: Event Grid's bearer token instead of a secret in the URL.

Tokens are signed here with an RSA key whose public half a 127.0.0.1 server publishes as a JWKS,
the way Entra ID publishes a tenant's keys; the bridge fetches and checks them as in Azure.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from deployments.bridge_auth import EVENT_GRID_ROLE, EntraTokenVerifier, bearer_token
from deployments.eventgrid_bridge import create_app
from tasks.settings import BridgeSettings
from tests.deployments.test_eventgrid_bridge import EVENT_GRID_SAMPLE, Recorder, serving

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
AUDIENCE = "api://restyle-bridge"
KID = "test-key-1"
SIGNING_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _jwks_handler(keys: dict[str, Any]) -> type[BaseHTTPRequestHandler]:
    class Jwks(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            body = json.dumps(keys).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    return Jwks


@pytest.fixture(scope="module")
def jwks_url() -> Iterator[str]:
    public = RSAAlgorithm.to_jwk(SIGNING_KEY.public_key(), as_dict=True)
    server = HTTPServer(("127.0.0.1", 0),
                        _jwks_handler({"keys": [{**public, "kid": KID, "use": "sig"}]}))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/discovery/v2.0/keys"
    finally:
        server.shutdown()
        server.server_close()


def token(key: rsa.RSAPrivateKey = SIGNING_KEY, **changes: Any) -> str:
    """A token shaped like the one Entra ID issues to Event Grid for the bridge's app."""
    now = int(time.time())
    claims = {
        "aud": AUDIENCE, "iss": f"https://sts.windows.net/{TENANT}/", "tid": TENANT,
        "iat": now, "nbf": now, "exp": now + 3600, "roles": [EVENT_GRID_ROLE],
        "appid": "4962773b-9cdb-44cf-a8bf-237846a00ab7", "sub": "event-grid-service-principal",
    }
    claims.update(changes)
    claims = {k: v for k, v in claims.items() if v is not None}
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": KID})


@pytest.fixture(scope="module")
def entra_bridge(jwks_url: str) -> Iterator[tuple[str, Recorder]]:
    settings = BridgeSettings(entra_tenant_id=TENANT, entra_audience=[AUDIENCE])
    recorder = Recorder()
    verifier = EntraTokenVerifier(TENANT, [AUDIENCE], jwks_url=jwks_url)
    with serving(create_app(settings, recorder, verifier), settings) as base:
        yield base, recorder


def _post(base: str, headers: dict[str, str], url: str = "/api/events") -> httpx.Response:
    return httpx.post(base + url, json=EVENT_GRID_SAMPLE, headers=headers, timeout=10)


def test_a_valid_token_delivers_without_any_secret(entra_bridge: tuple[str, Recorder]) -> None:
    base, recorder = entra_bridge
    response = _post(base, {"Authorization": f"Bearer {token()}"})
    assert response.status_code == 200, response.text
    assert len(recorder.events) >= 1
    v2 = token(iss=f"https://login.microsoftonline.com/{TENANT}/v2.0")
    assert _post(base, {"Authorization": f"Bearer {v2}"}).status_code == 200


@pytest.mark.parametrize(
    ("bearer", "status"),
    [
        (None, 401),
        (token(aud="api://someone-else"), 401),
        (token(exp=int(time.time()) - 3600, iat=int(time.time()) - 7200), 401),
        (token(iss="https://sts.windows.net/another-tenant/"), 401),
        (token(tid="another-tenant"), 401),
        (token(key=OTHER_KEY), 401),  # right kid, wrong signature
        (token(exp=None), 401),
        (token(roles=None), 403),
        (token(roles=["SomeOtherRole"]), 403),
        ("not-a-jwt", 401),
    ],
)
def test_anything_but_event_grids_token_is_refused(
    entra_bridge: tuple[str, Recorder], bearer: str | None, status: int
) -> None:
    base, recorder = entra_bridge
    before = len(recorder.events)
    headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
    response = _post(base, headers)
    assert response.status_code == status, response.text
    if status == 401:
        assert response.headers["WWW-Authenticate"] == "Bearer"
    assert len(recorder.events) == before


def test_a_shared_secret_is_not_accepted_when_only_entra_is_configured(
    entra_bridge: tuple[str, Recorder],
) -> None:
    base, _ = entra_bridge
    assert _post(base, {}, url="/api/events?code=anything").status_code == 401


def test_the_handshake_needs_no_token_but_deliveries_do(
    entra_bridge: tuple[str, Recorder],
) -> None:
    base, _ = entra_bridge
    origin = {"WebHook-Request-Origin": "eventgrid.azure.net"}
    assert httpx.options(base + "/api/events", headers=origin).status_code == 200
    bad = {**origin, "Authorization": "Bearer not-a-jwt"}
    assert httpx.options(base + "/api/events", headers=bad).status_code == 401


def test_unreachable_tenant_keys_are_a_503_so_event_grid_retries() -> None:
    settings = BridgeSettings(entra_tenant_id=TENANT, entra_audience=[AUDIENCE])
    verifier = EntraTokenVerifier(TENANT, [AUDIENCE], jwks_url="http://127.0.0.1:9/keys")
    with serving(create_app(settings, Recorder(), verifier), settings) as base:
        response = _post(base, {"Authorization": f"Bearer {token()}"})
    assert response.status_code == 503


def test_bearer_token_parsing() -> None:
    assert bearer_token("Bearer abc") == "abc"
    assert bearer_token("bearer  abc ") == "abc"
    assert bearer_token("Basic abc") is None
    assert bearer_token("Bearer ") is None
    assert bearer_token(None) is None
