"""One settings tree for restyle, read from ``RESTYLE_*`` environment variables.

Nested fields use ``__``: ``RESTYLE_COMPUTE__RANKS=4``, ``RESTYLE_STORAGE__ACCOUNT_URL=...``.
Defaults are the embedded local stack's (local ``mpiexec``); no credential has a default: the
local stack's Azurite connection string comes from ``tools/stack.sh env``.

The tree's branches live in this package's modules, one concern each; every settings class is
importable from ``tasks.settings`` itself.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from tasks.repo import REPO_ROOT
from tasks.settings.azure import AzureMLSettings, BridgeSettings
from tasks.settings.compute import ComputeSettings
from tasks.settings.inputs import LimitSettings, WatcherSettings
from tasks.settings.storage import STORAGE_SOURCES, StorageSettings
from tasks.settings.training import TrainingSettings

__all__ = [
    "REPO_ROOT",
    "STORAGE_SOURCES",
    "AzureMLSettings",
    "BridgeSettings",
    "ComputeSettings",
    "LimitSettings",
    "RestyleSettings",
    "StorageSettings",
    "TrainingSettings",
    "WatcherSettings",
]


class RestyleSettings(BaseSettings):
    """Root of the settings tree."""

    model_config = SettingsConfigDict(env_prefix="RESTYLE_", env_nested_delimiter="__")

    storage: StorageSettings = Field(default_factory=StorageSettings, description="Storage.")
    compute: ComputeSettings = Field(default_factory=ComputeSettings, description="Compute.")
    limits: LimitSettings = Field(default_factory=LimitSettings, description="Input limits.")
    training: TrainingSettings = Field(
        default_factory=TrainingSettings, description="Training of new styles (train-style)."
    )
    watcher: WatcherSettings = Field(default_factory=WatcherSettings, description="Watcher.")
    azureml: AzureMLSettings = Field(
        default_factory=AzureMLSettings, description="Azure ML compute backend."
    )
    bridge: BridgeSettings = Field(
        default_factory=BridgeSettings, description="Event Grid webhook bridge."
    )
    default_style: str = Field(
        default="starry_night", description="Style for uploads directly under the input container."
    )
    work_dir: Path = Field(
        default=REPO_ROOT / ".stack" / "work",
        description="Scratch space for flow runs; each run gets its own folder.",
    )

    @model_validator(mode="after")
    def _one_identity_for_azure(self) -> RestyleSettings:
        """The Prefect side reaches Azure ML and the data account as one identity: with an
        account URL, storage takes azureml.identity_client_id unless it names the same one."""
        storage, azure_id = self.storage, self.azureml.identity_client_id
        if azure_id is None or storage.account_url is None:
            return self
        if storage.identity_client_id is None:
            storage.identity_client_id = azure_id
        elif storage.identity_client_id != azure_id:
            raise ValueError(
                "RESTYLE_STORAGE__IDENTITY_CLIENT_ID and RESTYLE_AZUREML__IDENTITY_CLIENT_ID name "
                "different identities; the worker signs in as one (set only "
                "RESTYLE_AZUREML__IDENTITY_CLIENT_ID, or both to the same client id)")
        return self
