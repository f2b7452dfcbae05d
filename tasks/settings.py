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
        default="2026-06-06",
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
        default=4.0, gt=0,
        description="The longest chunk handed to a rank, in seconds; a video's frames are "
        "shared evenly among as few chunks as that allows. Each chunk is one "
        "x264 process, whose start and frame-thread ramp cost the cores a fixed share per chunk: "
        "on one H200 host, 4 s chunks kept the GPU job nearer the host's x264 rate than 2 s "
        "(docs/README.md). Preempted work is redone a chunk at a time.",
    )
    chunk_codec: Literal["auto", "utvideo", "rawvideo"] = Field(
        default="auto",
        description="How the chunks handed to the GPU job store their (identical, lossless) "
        "pixels. 'utvideo': compressed, so the GPU host's CPUs decode them with FFmpeg. "
        "'rawvideo': raw planes the job reads straight into its buffers, sparing the GPU "
        "host's CPUs (the job's limit) the decoding, which raised the job's frames/s on one "
        "H200 (docs/README.md), for several times the bytes of Ut Video. 'auto': rawvideo for the "
        "local backend when the raw chunks take at most half the work folder's free disk, "
        "utvideo otherwise and for azureml, whose chunks travel through Blob Storage.",
    )
    compile: Literal["auto", "none", "default", "reduce-overhead", "max-autotune",
                     "max-autotune-no-cudagraphs"] = Field(
        default="auto",
        description="torch.compile mode of the GPU job (its --compile). 'auto': CUDA graphs "
        "('reduce-overhead') on CUDA when each rank's share is long enough to win back the "
        "compile's 14-19 s (about 16 minutes of 1080p), eager otherwise or if that compile "
        "fails; a mode named here that fails to compile fails the job.",
    )
    crf: int = Field(default=18, ge=0, le=51, description="x264 CRF of the stylized video.")
    preset: str = Field(default="veryfast", description="x264 preset of the stylized video.")

    def stylize_args(self) -> tuple[str, ...]:
        """The GPU job's options these settings set, after ``--input`` and ``--output``."""
        return ("--device", self.device, "--compile", self.compile)


class TrainingSettings(BaseModel):
    """How the ``train-style`` flow trains a new style (the arguments of ``gpu.train``)."""

    content_dir: Path = Field(
        default=REPO_ROOT / ".carry" / "content" / "train",
        description="Content set the network learns to restyle: a folder of .jpg/.png/.webp "
        "images or a packed .pt/.npy uint8 (N, H, W, 3) tensor. "
        "`python tools/assemble_content.py` builds the default folder.",
    )
    steps: int = Field(default=1500, ge=1, description="Optimizer steps (about 75 s on an H200).")
    batch_size: int = Field(default=16, ge=1, description="Training crops per rank and step.")
    image_size: int = Field(default=256, ge=16, description="Side of the square training crops.")
    content_size: int = Field(
        default=320, ge=16, description="Square side content images are resized to first."
    )
    style_size: int = Field(
        default=512, ge=16, description="Long side the style image is resized to for its Grams."
    )
    arch: Literal["stylenet", "johnson"] = Field(
        default="stylenet", description="Network architecture (gpu/model.py)."
    )
    model_hparams: dict[str, int | str] = Field(
        default_factory=dict,
        description='Architecture hyper-parameters, e.g. {"width": 48} or {"head": "full_res"}; '
        "empty: the defaults (the shipped styles' architecture).",
    )
    style_weight: float = Field(
        default=5.0, gt=0,
        description="Weight of the Gram style loss against the content loss (1). The shipped "
        "styles used 2-15 (gpu/styles/manifest.json); at 1 the first shipped set stayed 2-4x "
        "short of Gatys' style loss. Raise it for a stronger look, lower it to keep more of "
        "the frame.",
    )
    max_seconds: float | None = Field(
        default=None, gt=0, description="Stop training after this many seconds even before steps."
    )


class LimitSettings(BaseModel):
    """Inputs beyond these limits are rejected before any work is done."""

    max_bytes: int = Field(default=4 * 1024**3, description="Largest accepted input, in bytes.")
    max_pixels: int = Field(
        default=3840 * 2160, description="Largest accepted frame, in pixels (width x height)."
    )
    max_duration_s: float = Field(default=3 * 3600, description="Longest accepted input, seconds.")
    min_side: int = Field(
        default=16, ge=8,
        description="Smallest accepted frame side, in pixels: the style networks' padding needs "
        "at least 8, and smaller frames carry no picture worth restyling.",
    )


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


class AzureMLSettings(BaseModel):
    """Where and how the GPU job runs on Azure Machine Learning (``compute.backend=azureml``).

    Credentials never live here: the backend authenticates with azure-identity
    (``DefaultAzureCredential``; a user-assigned managed identity when ``identity_client_id``
    is set).
    """

    subscription_id: str | None = Field(
        default=None, description="Azure subscription id of the Azure ML workspace."
    )
    resource_group: str | None = Field(
        default=None, description="Resource group of the Azure ML workspace."
    )
    workspace: str | None = Field(default=None, description="Azure ML workspace name.")
    identity_client_id: str | None = Field(
        default=None,
        description="Client id of the managed identity the Prefect side authenticates as; unset "
        "lets DefaultAzureCredential pick (az login, workload identity, managed identity).",
    )
    job_identity_client_id: str | None = Field(
        default=None,
        description="Client id of the user-assigned identity attached to the cluster (output "
        "jobIdentityClientId of deployments/infra/main.bicep); the job mounts the job datastore "
        "as this identity. Unset: Azure ML's default data access identity.",
    )
    compute: str = Field(default="gpu-cluster", description="AmlCompute cluster the job runs on.")
    vm_size: str | None = Field(
        default=None,
        description="Overrides the GPU VM size of deployments/azureml/compute.yaml when the "
        "cluster is created from it.",
    )
    max_instances: int | None = Field(
        default=None, ge=1, description="Overrides compute.yaml's max_instances (cluster cap)."
    )
    instance_count: int = Field(default=1, ge=1, description="Nodes the job runs on.")
    gpus_per_node: int = Field(
        default=1, ge=1, description="MPI processes per node: one rank per GPU of the VM size."
    )
    low_priority: bool = Field(
        default=True,
        description="Create the cluster with the low-priority tier (cheaper, can be preempted; "
        "preempted jobs are resubmitted and resume from finished chunks).",
    )
    environment: str | None = Field(
        default=None,
        description="Registered environment 'name:version' to run in; unset builds the "
        "environment of deployments/azureml/environment.yaml (Open MPI + CUDA base image).",
    )
    image: str | None = Field(
        default=None,
        description="Base image replacing environment.yaml's (for example a newer Open MPI + "
        "CUDA tag); ignored when a registered environment is named.",
    )
    data_datastore: str = Field(
        default="restyle_jobs",
        description="Azure ML datastore (data account, container data_container) holding job "
        "input and output folders.",
    )
    data_account_url: str | None = Field(
        default=None,
        description="https://<data account>.blob.core.windows.net behind data_datastore; the "
        "backend uploads inputs and downloads outputs there with azure-identity.",
    )
    data_container: str = Field(
        default="jobs", description="Container behind data_datastore (job folders)."
    )
    code_datastore: str = Field(
        default="workspaceblobstore",
        description="The workspace's default datastore (system account) where Azure ML keeps "
        "code snapshots and logs; checked before submitting so snapshots never land in the data "
        "account.",
    )
    job_prefix: str = Field(
        default="restyle-jobs", description="Path prefix of job folders inside data_datastore."
    )
    experiment_name: str = Field(default="restyle", description="Azure ML experiment name.")
    max_attempts: int = Field(
        default=3, ge=1, description="Submissions per GPU job in all, counting preemption retries."
    )
    backoff_seconds: float = Field(
        default=30.0,
        ge=0,
        description="Wait before the first resubmission after a preemption; doubles each time.",
    )
    poll_seconds: float = Field(
        default=15.0, gt=0, description="Seconds between job status polls (and progress updates)."
    )
    sas_minutes: int = Field(
        default=60,
        ge=1,
        le=7 * 24 * 60,
        description="Lifetime of read-only user-delegation SAS links handed out for results.",
    )


class BridgeSettings(BaseModel):
    """The Event Grid webhook bridge (deployments/eventgrid_bridge.py)."""

    shared_secret: SecretStr | None = Field(
        default=None,
        description="Secret expected in the webhook URL query (?code=...); the bridge refuses "
        "to start without one.",
    )
    allowed_containers: list[str] = Field(
        default=["videos", "styles"], description="Containers whose new blobs become events."
    )
    allowed_extensions: list[str] = Field(
        default=[".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", ".png", ".jpg", ".jpeg", ".webp"],
        description="Blob name extensions (lower case, with the dot) that become events.",
    )
    max_body_bytes: int = Field(
        default=1024 * 1024, ge=1024, description="Largest accepted request body, in bytes."
    )
    dedupe_capacity: int = Field(
        default=10_000, ge=1, description="Event ids remembered to drop Event Grid redeliveries."
    )
    host: str = Field(default="127.0.0.1", description="Address uvicorn listens on.")
    port: int = Field(default=8088, ge=1, le=65535, description="Port uvicorn listens on.")


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
