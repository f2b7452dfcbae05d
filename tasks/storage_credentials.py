"""Storage credentials as a prefect-azure block, and the one blob client built from them.

Credentials are a prefect-azure ``AzureBlobStorageCredentials`` block, validated when built
(exactly one of connection string or account URL). :func:`storage_credentials` loads the block
that ``storage.credentials_block`` names (saved in the Prefect UI or with ``.save()``), or builds
an unsaved one from ``storage.connection_string`` / ``storage.account_url``, the environment
fallback. :func:`blob_service_client` turns it into the synchronous client the blob store uses,
with the pinned API version and, for account URLs, an Entra ID token credential (a
user-assigned managed identity when ``storage.identity_client_id`` is set).
"""

from __future__ import annotations

from typing import Any

from azure.core.credentials import TokenCredential
from azure.storage.blob import BlobServiceClient
from prefect_azure import AzureBlobStorageCredentials

from tasks.settings import STORAGE_SOURCES, StorageSettings


class StorageNotConfiguredError(ValueError):
    """No usable storage credentials; the message says which setting to fix."""


def storage_credentials(settings: StorageSettings) -> AzureBlobStorageCredentials:
    """The credentials block ``settings`` name, loaded from Prefect or built from the fields.

    Raises:
        StorageNotConfiguredError: no source is set, or the named block does not exist.
    """
    if settings.credentials_block is not None:
        try:
            # make_blob_store is synchronous: take the sync path even under a running loop.
            return AzureBlobStorageCredentials.load(settings.credentials_block, _sync=True)
        except ValueError as exc:
            raise StorageNotConfiguredError(
                f"storage.credentials_block {settings.credentials_block!r} could not be loaded "
                f"({exc}); save an 'Azure Blob Storage Credentials' block under that name"
            ) from None
    if settings.connection_string is None and settings.account_url is None:
        raise StorageNotConfiguredError(
            "storage credentials are not configured: set exactly one of "
            f"{STORAGE_SOURCES['credentials_block']} (a saved prefect-azure block), "
            f"{STORAGE_SOURCES['account_url']} (https://<account>.blob.core.windows.net) or "
            f"{STORAGE_SOURCES['connection_string']} (the local stack exports Azurite's: "
            'eval "$(tools/stack.sh env)")'
        )
    return AzureBlobStorageCredentials(
        connection_string=settings.connection_string, account_url=settings.account_url
    )


def azure_credential(
    credentials: AzureBlobStorageCredentials, identity_client_id: str | None
) -> TokenCredential:
    """The Entra ID credential for an account-URL block.

    A block holding a service principal signs in as it; otherwise ``DefaultAzureCredential``,
    pinned to the user-assigned managed identity ``identity_client_id`` when given.
    """
    from azure.identity import ClientSecretCredential, DefaultAzureCredential

    if credentials.client_id is not None:
        if identity_client_id is not None:
            raise StorageNotConfiguredError(
                "the storage block holds a service principal and storage.identity_client_id "
                "names a managed identity: keep one"
            )
        assert credentials.tenant_id is not None and credentials.client_secret is not None
        return ClientSecretCredential(
            credentials.tenant_id, credentials.client_id,
            credentials.client_secret.get_secret_value(),
        )
    if identity_client_id is not None:
        return DefaultAzureCredential(managed_identity_client_id=identity_client_id)
    return DefaultAzureCredential()


def blob_service_client(settings: StorageSettings, quick: bool = False) -> BlobServiceClient:
    """The synchronous blob client for the account ``settings`` name.

    ``quick`` gives up after one short try, for optional look-ups that must never stall.

    Raises:
        StorageNotConfiguredError: missing, conflicting or malformed credentials; the message
            never repeats a connection string, which holds a key.
    """
    credentials = storage_credentials(settings)
    options: dict[str, Any] = {}
    if quick:
        options.update(retry_total=0, connection_timeout=2, read_timeout=2)
    if settings.api_version:
        options["api_version"] = settings.api_version
    if credentials.connection_string is None:
        assert credentials.account_url is not None  # the block's own validator ensures one
        token = azure_credential(credentials, settings.identity_client_id)
        return BlobServiceClient(credentials.account_url, credential=token, **options)
    connection_string = credentials.connection_string.get_secret_value().strip()
    if not connection_string:
        raise StorageNotConfiguredError(
            f"storage block {settings.credentials_block!r} has an empty connection string"
        )
    if settings.identity_client_id is not None:
        raise StorageNotConfiguredError(
            "storage.identity_client_id applies to an account URL; the storage block holds a "
            "connection string, which carries its own key"
        )
    try:
        return BlobServiceClient.from_connection_string(connection_string, **options)
    except ValueError:
        raise StorageNotConfiguredError(
            "the storage connection string is malformed (expected "
            "'DefaultEndpointsProtocol=...;AccountName=...;AccountKey=...;BlobEndpoint=...'); "
            "it is not repeated here because it holds a key"
        ) from None
