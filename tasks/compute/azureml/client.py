"""The Azure clients the backend needs, authenticated with azure-identity only (no keys)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tasks.compute.base import GpuJobError
from tasks.settings import AzureMLSettings

if TYPE_CHECKING:
    from azure.ai.ml import MLClient
    from azure.core.credentials import TokenCredential


def make_credential(settings: AzureMLSettings) -> TokenCredential:
    """``DefaultAzureCredential``, pinned to ``identity_client_id`` when one is configured.

    The one credential of the Azure ML side: the workspace client and the data account's job
    folders both use it, so the two never authenticate as different identities.
    """
    from azure.identity import DefaultAzureCredential

    if settings.identity_client_id:
        return DefaultAzureCredential(managed_identity_client_id=settings.identity_client_id)
    return DefaultAzureCredential()


def make_ml_client(settings: AzureMLSettings, credential: TokenCredential) -> MLClient:
    """The workspace client; every coordinate must be set (no discovery from config files)."""
    from azure.ai.ml import MLClient

    missing = [
        name
        for name in ("subscription_id", "resource_group", "workspace")
        if not getattr(settings, name)
    ]
    if missing:
        env = ", ".join(f"RESTYLE_AZUREML__{name.upper()}" for name in missing)
        raise GpuJobError(f"Azure ML backend is not configured: set {env}")
    return MLClient(
        credential,
        subscription_id=settings.subscription_id,
        resource_group_name=settings.resource_group,
        workspace_name=settings.workspace,
    )
