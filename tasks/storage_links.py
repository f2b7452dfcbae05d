"""Result links that open: a blob URL signed with a short-lived, read-only user-delegation SAS.

Result blobs are private, so a bare URL in the Prefect UI does not open on a real account. The
signature comes from a user-delegation key requested with the Prefect side's Entra ID
credential (its identity needs the Storage Blob Delegator role on the account), never from an
account key, and grants read on that one blob until it expires.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from azure.core.credentials import TokenCredential
from azure.storage.blob import (
    BlobSasPermissions,
    BlobServiceClient,
    UserDelegationKey,
    generate_blob_sas,
)

CLOCK_SKEW = timedelta(minutes=5)
logger = logging.getLogger("restyle.storage")


def result_link(service: BlobServiceClient, container: str, blob: str, minutes: int) -> str:
    """A URL for ``container/blob`` that a person can open for ``minutes``.

    Signed (read-only, HTTPS-only, user delegation) when ``service`` authenticates with an
    Entra ID token, as on a real account; the plain URL otherwise, as on Azurite, where the
    local stack's reader holds the key anyway. Hand it to a person; never log it (the
    backend's redaction strips the signature if it ends up in text anyway).
    """
    plain = f"{service.url.rstrip('/')}/{container}/{quote(blob)}"
    if not isinstance(service.credential, TokenCredential):
        return plain
    try:
        return user_delegation_read_url(service, container, blob, minutes)
    except Exception as error:  # a link is a courtesy: the delivered result must stand
        logger.warning("result link left unsigned (does this identity have the Storage Blob "
                       "Delegator role?): %s: %s", type(error).__name__, error)
        return plain


def user_delegation_read_url(service: Any, container: str, blob: str, minutes: int = 60) -> str:
    """A read-only HTTPS URL for one blob, signed with a user-delegation key (no account key).

    The key is requested with the caller's Entra ID credential and lives as long as the SAS,
    so the URL grants read on this one blob for ``minutes`` and nothing else.
    """
    start = datetime.now(UTC) - CLOCK_SKEW
    expiry = datetime.now(UTC) + timedelta(minutes=minutes)
    key = service.get_user_delegation_key(key_start_time=start, key_expiry_time=expiry)
    return sign_blob_read_url(
        service.url, service.account_name, container, blob, key, start, expiry
    )


def sign_blob_read_url(
    account_url: str,
    account_name: str | None,
    container: str,
    blob: str,
    key: UserDelegationKey,
    start: datetime,
    expiry: datetime,
) -> str:
    """The URL of one blob with a read-only, HTTPS-only user-delegation SAS (pure)."""
    if not account_name:
        raise ValueError("account name unknown: cannot sign a SAS")
    sas = generate_blob_sas(
        account_name=account_name,
        container_name=container,
        blob_name=blob,
        user_delegation_key=key,
        permission=BlobSasPermissions(read=True),
        start=start,
        expiry=expiry,
        protocol="https",
    )
    return f"{account_url.rstrip('/')}/{container}/{quote(blob)}?{sas}"
