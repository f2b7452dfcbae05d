"""One settings tree for restyle, read from ``RESTYLE_*`` environment variables.

Nested fields use ``__``: ``RESTYLE_COMPUTE__RANKS=4``, ``RESTYLE_STORAGE__CONNECTION_STRING=...``.
Defaults are the embedded local stack (Azurite, local ``mpiexec``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent

AZURITE_CONNECTION_STRING = (
    # Azurite's published development account; not a secret, and refused by real Azure.
    "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
    "AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;"
    "BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;"
)


class StorageSettings(BaseModel):
    """Where videos, results and style images live."""

    connection_string: SecretStr | None = Field(
        default=SecretStr(AZURITE_CONNECTION_STRING),
        description="Connection string (Azurite locally). Leave unset for a real account and "
        "set account_url instead, so credentials come from azure-identity, not a key.",
    )
    account_url: str | None = Field(
        default=None,
        description="https://<account>.blob.core.windows.net; used with DefaultAzureCredential "
        "when no connection string is set.",
    )
    api_version: str | None = Field(
        default="2025-01-05",
        description="Blob REST API version the client speaks. Pinned because the newest SDK "
        "speaks a version Azurite rejects; set empty to use the SDK's default on Azure.",
    )
    input_container: str = Field(default="videos", description="Container users upload to.")
    output_container: str = Field(default="stylized", description="Container for results.")
    styles_container: str = Field(default="styles", description="Container for style images.")
    models_container: str = Field(
        default="models", description="Container for style models trained by train-style."
    )


class ComputeSettings(BaseModel):
    """Where and how the GPU job runs."""

    backend: Literal["local", "azureml"] = Field(
        default="local", description="'local' runs mpiexec here; 'azureml' submits a command job."
    )
    ranks: int = Field(default=2, ge=1, description="MPI ranks for the local backend.")
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto", description="Device for the GPU job; auto picks CUDA when present."
    )
    chunk_seconds: float = Field(
        default=2.0, gt=0, description="Target length of one chunk handed to a rank, in seconds."
    )
    crf: int = Field(default=18, ge=0, le=51, description="x264 CRF of the stylized video.")
    preset: str = Field(default="veryfast", description="x264 preset of the stylized video.")


class LimitSettings(BaseModel):
    """Inputs beyond these limits are rejected before any work is done."""

    max_bytes: int = Field(default=4 * 1024**3, description="Largest accepted input, in bytes.")
    max_pixels: int = Field(
        default=3840 * 2160, description="Largest accepted frame, in pixels (width x height)."
    )
    max_duration_s: float = Field(default=3 * 3600, description="Longest accepted input, seconds.")


class WatcherSettings(BaseModel):
    """The local blob-event source that stands in for Event Grid on Azurite."""

    poll_seconds: float = Field(default=0.5, gt=0, description="Seconds between listings.")
    state_path: Path = Field(
        default=REPO_ROOT / ".stack" / "watcher-state.json",
        description="Where the watcher remembers which blob versions it has announced.",
    )
    containers: list[str] = Field(
        default=["videos", "styles"], description="Containers whose new blobs become events."
    )


class RestyleSettings(BaseSettings):
    """Root of the settings tree."""

    model_config = SettingsConfigDict(env_prefix="RESTYLE_", env_nested_delimiter="__")

    storage: StorageSettings = Field(default_factory=StorageSettings, description="Storage.")
    compute: ComputeSettings = Field(default_factory=ComputeSettings, description="Compute.")
    limits: LimitSettings = Field(default_factory=LimitSettings, description="Input limits.")
    watcher: WatcherSettings = Field(default_factory=WatcherSettings, description="Watcher.")
    default_style: str = Field(
        default="starry_night", description="Style for uploads directly under the input container."
    )
    work_dir: Path = Field(
        default=REPO_ROOT / ".stack" / "work",
        description="Scratch space for flow runs; each run gets its own folder.",
    )
