"""Result links: a read-only, HTTPS-only, short-lived user-delegation SAS on a real account."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from azure.core.credentials import AccessToken
from azure.storage.blob import BlobServiceClient, UserDelegationKey

from tasks.storage_links import result_link, sign_blob_read_url, user_delegation_read_url
from tests.azurite import connection_string


class _DelegationService:
    """Stands in for the service's Get User Delegation Key call (needs Entra ID, not Azurite)."""

    url = "https://restyledata.blob.core.windows.net/"
    account_name = "restyledata"

    def __init__(self, credential: Any = None) -> None:
        self.credential = credential
        self.requested: list[tuple[datetime, datetime]] = []

    def get_user_delegation_key(
        self, key_start_time: datetime, key_expiry_time: datetime
    ) -> UserDelegationKey:
        self.requested.append((key_start_time, key_expiry_time))
        key = UserDelegationKey()
        key.signed_oid, key.signed_tid = "oid", "tid"
        key.signed_start = key_start_time.strftime("%Y-%m-%dT%H:%M:%SZ")
        key.signed_expiry = key_expiry_time.strftime("%Y-%m-%dT%H:%M:%SZ")
        key.signed_service, key.signed_version = "b", "2025-01-05"
        key.value = "a2V5LWJ5dGVzLWZvci10ZXN0aW5nLW9ubHktMzItYnl0ZXM="
        return key


class _EntraToken:
    """An Entra ID token credential, as DefaultAzureCredential is."""

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken("token", 0)


def test_user_delegation_sas_is_read_only_https_and_short_lived() -> None:
    service = _DelegationService()
    url = user_delegation_read_url(service, "stylized", "starry night/clip 1.mp4", minutes=30)

    parts = urlsplit(url)
    query = parse_qs(parts.query)
    assert parts.path == "/stylized/starry%20night/clip%201.mp4"
    assert query["sp"] == ["r"] and query["spr"] == ["https"] and query["sr"] == ["b"]
    assert query["skoid"] == ["oid"] and "sig" in query
    expiry = datetime.strptime(query["se"][0], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert timedelta(minutes=29) < expiry - datetime.now(UTC) <= timedelta(minutes=30)
    # The delegation key lives no longer than the SAS it signs.
    assert service.requested[0][1] - datetime.now(UTC) <= timedelta(minutes=30)


def test_sign_blob_read_url_needs_an_account_name() -> None:
    key = _DelegationService().get_user_delegation_key(datetime.now(UTC), datetime.now(UTC))
    with pytest.raises(ValueError, match="account name"):
        sign_blob_read_url("https://x", None, "c", "b", key, datetime.now(UTC), datetime.now(UTC))


def test_result_link_is_signed_on_an_entra_id_account() -> None:
    service = _DelegationService(_EntraToken())
    url = result_link(service, "stylized", "udnie/a.mp4", minutes=15)  # type: ignore[arg-type]
    query = parse_qs(urlsplit(url).query)
    assert query["sp"] == ["r"] and "sig" in query and len(service.requested) == 1


def test_result_link_is_the_plain_url_on_azurite() -> None:
    service = BlobServiceClient.from_connection_string(connection_string(10000))
    assert result_link(service, "stylized", "udnie/a b.mp4", minutes=15) == (
        "http://127.0.0.1:10000/devstoreaccount1/stylized/udnie/a%20b.mp4"
    )


class _NoDelegatorRole(_DelegationService):
    def get_user_delegation_key(self, key_start_time: datetime,
                                key_expiry_time: datetime) -> UserDelegationKey:
        raise PermissionError("AuthorizationPermissionMismatch")


def test_a_refused_delegation_key_leaves_the_link_plain_and_says_why(
        caplog: pytest.LogCaptureFixture) -> None:
    service = _NoDelegatorRole(_EntraToken())
    url = result_link(service, "stylized", "udnie/a.mp4", minutes=15)  # type: ignore[arg-type]
    assert url == "https://restyledata.blob.core.windows.net/stylized/udnie/a.mp4"
    assert "Delegator role" in caplog.text and "AuthorizationPermissionMismatch" in caplog.text


def test_the_store_shares_results_with_a_signed_link_on_an_entra_id_account(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from tasks.storage import AzureBlobStore

    client = BlobServiceClient("https://restyledata.blob.core.windows.net",
                               credential=_EntraToken())
    delegation = _DelegationService()
    monkeypatch.setattr(client, "get_user_delegation_key", delegation.get_user_delegation_key)
    url = AzureBlobStore(client).share_url("stylized", "udnie/a.mp4", minutes=20)
    query = parse_qs(urlsplit(url).query)
    assert urlsplit(url).path == "/stylized/udnie/a.mp4"
    assert query["sp"] == ["r"] and "sig" in query and len(delegation.requested) == 1
