"""Who may deliver events to the bridge: a shared secret, or an Entra ID token from Event Grid.

* Shared secret: ``?code=<secret>`` in the webhook URL (``bridge.shared_secret``). Simple, but
  the secret travels in the URL and sits in the event subscription.
* Microsoft Entra ID ("Deliver events to Microsoft Entra protected endpoints"): the event
  subscription names an Entra application (``azureActiveDirectoryApplicationIdOrUri`` and its
  tenant); Event Grid then sends ``Authorization: Bearer <token>``, a token that Entra ID issued
  to Event Grid's service principal for that application and that carries the application's
  ``AzureEventGridSecureWebhookSubscriber`` app role. No secret travels or is stored. The bridge
  checks the signature against the tenant's published keys, the issuer, the audience, the
  expiry and the role.

An unverifiable request is refused with 401 (no or bad credentials) or 403 (a valid token
without the role), which Event Grid does not retry. When the bridge itself cannot check a token
(the tenant's key set cannot be fetched) it answers 503, which Event Grid retries.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import jwt
from jwt import PyJWKClient
from jwt.exceptions import InvalidTokenError, PyJWKClientConnectionError, PyJWKClientError

EVENT_GRID_ROLE = "AzureEventGridSecureWebhookSubscriber"
CLOCK_SKEW_S = 120


class Unauthorized(Exception):
    """No credential, or one that does not verify (HTTP 401)."""


class Forbidden(Exception):
    """A genuine credential that does not grant delivery (HTTP 403)."""


class AuthUnavailable(Exception):
    """The bridge could not check the credential just now (HTTP 503, Event Grid retries)."""


@dataclass(frozen=True)
class SharedSecret:
    """The ``?code=`` secret, compared in constant time."""

    secret: str

    def check(self, code: str) -> None:
        if not hmac.compare_digest(code.encode(), self.secret.encode()):
            raise Forbidden("wrong code")


class EntraTokenVerifier:
    """Verifies Event Grid's bearer tokens for one Entra application.

    Args:
        tenant_id: The tenant that issues the tokens (the application's tenant).
        audiences: The application's client id and/or Application ID URI (``api://...``);
            tokens for any of them are accepted.
        role: App role the token must carry.
        jwks_url: Where the tenant's signing keys are published; defaults to Entra ID's.
    """

    def __init__(
        self,
        tenant_id: str,
        audiences: Sequence[str],
        role: str = EVENT_GRID_ROLE,
        jwks_url: str | None = None,
    ) -> None:
        if not tenant_id or not audiences:
            raise ValueError("Entra ID delivery needs a tenant id and at least one audience")
        self.tenant_id = tenant_id
        self.audiences = list(audiences)
        self.role = role
        # v1 and v2 tokens name their issuer differently; both are the tenant's.
        self.issuers = [f"https://login.microsoftonline.com/{tenant_id}/v2.0",
                        f"https://sts.windows.net/{tenant_id}/"]
        self._keys = PyJWKClient(
            jwks_url or f"https://login.microsoftonline.com/{tenant_id}/discovery/v2.0/keys",
            cache_keys=True, lifespan=3600, timeout=10,
        )

    def verify(self, token: str) -> dict[str, Any]:
        """The token's claims if it admits a delivery; blocking (may fetch the key set)."""
        try:
            key = self._keys.get_signing_key_from_jwt(token)
        except PyJWKClientConnectionError as exc:
            raise AuthUnavailable("the tenant's signing keys could not be fetched") from exc
        except (PyJWKClientError, InvalidTokenError) as exc:
            raise Unauthorized(f"token not verifiable: {type(exc).__name__}") from None
        try:
            claims = jwt.decode(
                token, key.key, algorithms=["RS256"], audience=self.audiences,
                issuer=self.issuers, leeway=CLOCK_SKEW_S,
                options={"require": ["exp", "iat", "iss", "aud"]},
            )
        except InvalidTokenError as exc:
            raise Unauthorized(f"token rejected: {type(exc).__name__}") from None
        if claims.get("tid") != self.tenant_id:
            raise Unauthorized("token from another tenant")
        roles = claims.get("roles")
        if not isinstance(roles, list) or self.role not in roles:
            raise Forbidden(f"token lacks the app role {self.role}")
        return claims


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, else None."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None
