"""Storage settings: the containers and the one credential source that reaches them."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, SecretStr, ValidationInfo, field_validator

STORAGE_SOURCES = {
    "credentials_block": "RESTYLE_STORAGE__CREDENTIALS_BLOCK",
    "connection_string": "RESTYLE_STORAGE__CONNECTION_STRING",
    "account_url": "RESTYLE_STORAGE__ACCOUNT_URL",
}
"""The ways to name the storage account's credentials, by field and environment variable."""


class StorageSettings(BaseModel):
    """Where videos, results and style images live, and which credentials reach them.

    Exactly one credential source is used: a prefect-azure ``AzureBlobStorageCredentials`` block
    (``credentials_block``), a ``connection_string`` or an ``account_url``. Naming two is refused
    when the settings are built; naming none is refused when a blob store is built
    (:func:`tasks.storage_credentials.storage_credentials`), so processes that never touch
    storage (the Event Grid bridge, offline tools) need none. No credential has a default.
    """

    credentials_block: str | None = Field(
        default=None,
        description="Name of a saved prefect-azure 'Azure Blob Storage Credentials' block "
        "(Prefect UI: Blocks) holding the account URL (or a connection string); the production "
        "way, so credentials live in Prefect, not in the worker's environment.",
    )
    connection_string: SecretStr | None = Field(
        default=None,
        description="Connection string with an account key: the local stack's Azurite, which "
        "`tools/stack.sh env` exports. Leave unset for a real account.",
    )
    account_url: str | None = Field(
        default=None,
        validate_default=True,  # the one-source check below runs even when this is unset
        description="https://<account>.blob.core.windows.net, reached with azure-identity "
        "(DefaultAzureCredential; identity_client_id picks a user-assigned managed identity).",
    )
    identity_client_id: str | None = Field(
        default=None,
        description="Client id of the user-assigned managed identity storage is reached as "
        "(with account_url or a block's account URL); unset lets DefaultAzureCredential pick.",
    )
    api_version: str | None = Field(
        default="2026-06-06",
        description="Blob REST API version the client speaks. Pinned because the newest SDK "
        "speaks a version Azurite rejects; set empty to use the SDK's default on Azure.",
    )
    link_minutes: int = Field(
        default=60, ge=1, le=7 * 24 * 60,
        description="Lifetime of the read-only user-delegation SAS that signs the result link on "
        "the run page, on a real account (needs the Storage Blob Delegator role).",
    )
    input_container: str = Field(default="videos", description="Container users upload to.")
    output_container: str = Field(default="stylized", description="Container for results.")
    styles_container: str = Field(default="styles", description="Container for style images.")
    models_container: str = Field(
        default="models", description="Container for style models trained by train-style."
    )

    @field_validator(
        "credentials_block", "connection_string", "account_url", "identity_client_id",
        mode="before",
    )
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        """``VAR=`` in an environment means "not set", never an empty credential."""
        if isinstance(value, SecretStr):
            return value if value.get_secret_value().strip() else None
        if isinstance(value, str):
            return value.strip() or None
        return value

    # The checks sit on non-secret fields: a model-level error would print every field's input,
    # the connection string's key included.
    @field_validator("account_url")
    @classmethod
    def _one_source(cls, account_url: str | None, info: ValidationInfo) -> str | None:
        if account_url is not None and not account_url.startswith("https://"):
            raise ValueError(
                "storage.account_url must be https://<account>.blob.core.windows.net "
                "(Azurite: use RESTYLE_STORAGE__CONNECTION_STRING)"
            )
        given = [name for name in ("credentials_block", "connection_string")
                 if info.data.get(name) is not None]
        if account_url is not None:
            given.append("account_url")
        if len(given) > 1:
            raise ValueError(
                "storage credentials are named more than once ("
                + ", ".join(STORAGE_SOURCES[name] for name in given)
                + "): set exactly one of " + ", ".join(STORAGE_SOURCES.values())
            )
        return account_url

    @field_validator("identity_client_id")
    @classmethod
    def _identity_needs_a_token(cls, client_id: str | None, info: ValidationInfo) -> str | None:
        if client_id is not None and info.data.get("connection_string") is not None:
            raise ValueError(
                "storage.identity_client_id applies to an account URL; a connection string "
                "carries its own key (unset RESTYLE_STORAGE__IDENTITY_CLIENT_ID or use "
                "RESTYLE_STORAGE__ACCOUNT_URL)"
            )
        return client_id
