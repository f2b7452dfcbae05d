"""One settings tree for restyle, read from ``RESTYLE_*`` environment variables.

Nested fields use ``__``: ``RESTYLE_COMPUTE__RANKS=4``, ``RESTYLE_STORAGE__ACCOUNT_URL=...``.
Defaults are the embedded local stack's (local ``mpiexec``); no credential has a default: the
local stack's Azurite connection string comes from ``tools/stack.sh env``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from gpu.jobdir import EncodeSettings

REPO_ROOT = Path(__file__).resolve().parent.parent

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


class ComputeSettings(BaseModel):
    """Where and how the GPU job runs, and the GPU job's own options."""

    backend: Literal["local", "azureml"] = Field(
        default="local", description="'local' runs mpiexec here; 'azureml' submits a command job."
    )
    ranks: int = Field(default=2, ge=1, description="MPI ranks for the local backend.")
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto",
        description="Device of the local GPU job (--device); auto picks CUDA when present. The "
        "azureml backend always asks for CUDA, so a node whose GPU torch cannot use fails at "
        "once instead of stylizing on its CPU while the GPU bills.",
    )
    chunk_seconds: float = Field(
        default=4.0, gt=0,
        description="The longest chunk handed to a rank, in seconds; a video's frames are "
        "shared evenly among as few chunks as that allows. Each chunk is one x264 process with "
        "a fixed start-up cost, so longer chunks waste less; a retry redoes work a chunk at a "
        "time (docs/performance.md).",
    )
    chunk_codec: Literal["auto", "utvideo", "rawvideo"] = Field(
        default="auto",
        description="How the chunks handed to the GPU job store their (identical, lossless) "
        "pixels. 'utvideo': compressed, decoded by FFmpeg on the GPU host's CPUs. 'rawvideo': "
        "raw planes read straight into the job's buffers, sparing those CPUs the decoding for "
        "several times the bytes. 'auto': rawvideo for the local backend when the raw chunks "
        "take at most half the work folder's free disk, utvideo otherwise and for azureml, "
        "whose chunks travel through Blob Storage.",
    )
    compile: Literal["auto", "none", "default", "reduce-overhead", "max-autotune",
                     "max-autotune-no-cudagraphs"] = Field(
        default="auto",
        description="torch.compile mode of the GPU job (--compile). 'auto': CUDA graphs "
        "('reduce-overhead') on CUDA when each rank's share is long enough to win back the "
        "compile, eager otherwise or if that compile fails; a mode named here that fails to "
        "compile fails the job.",
    )
    crf: int = Field(
        default=EncodeSettings.crf, ge=0, le=51,
        description="x264 CRF of the stylized video (the job reads it from its manifest).",
    )
    preset: str = Field(
        default=EncodeSettings.preset,
        description="x264 preset of the stylized video. The default, superfast at CRF 17, "
        "matches the quality of veryfast at CRF 18 and encodes faster; ultrafast at CRF 18 is "
        "the fastest choice and faster at CRF 20 the smallest file (docs/encode_quality.md).",
    )
    batch_size: int = Field(
        default=0, ge=0,
        description="Frames per forward pass (--batch-size); 0: the job's default, 16 on CUDA "
        "up to 1080p (fewer for larger frames) and 2 on the CPU.",
    )
    encoders: int = Field(
        default=0, ge=0,
        description="Chunks each rank keeps in flight, each with its own FFmpeg decoder and "
        "x264 encoder (--encoders); 0: one per two of the rank's threads.",
    )
    encoder_threads: int = Field(
        default=0, ge=0,
        description="x264 threads of each chunk in flight (--encoder-threads); 0: all of the "
        "rank's threads.",
    )
    threads: int = Field(
        default=0, ge=0,
        description="CPU threads per rank, torch's and its FFmpeg processes' (--threads); 0: "
        "the node's cores shared among its ranks.",
    )
    strength: float | None = Field(
        default=None, ge=0, le=1,
        description="How strongly the style paints, 0 (near the input) to 1 (the full style); "
        "unset: each style's own default, the strongest that keeps the video's subjects "
        "recognizable (docs/strength.json).",
    )
    stroke_scale: float = Field(
        default=1.0, ge=0.25, le=4,
        description="Brush size: the network paints at 720 / stroke_scale lines (never more "
        "than the frame's), so 2 doubles the strokes and 720p and 1080p look alike.",
    )
    preserve_colors: bool = Field(
        default=False,
        description="Keep the video's own colours under the painted luminance.",
    )
    max_waiting_batches: int = Field(
        default=0, ge=0,
        description="Start a new chunk only while at most this many batches wait for the "
        "network (--max-waiting-batches), so a network-bound rank keeps few chunks in flight "
        "and the last ones spread over the ranks; 0: start one whenever a lane is free.",
    )
    gpu_attempts: int = Field(
        default=3, ge=1,
        description="Runs of the GPU step in all, on either backend: a rank that dies (killed, "
        "out of memory) or a node that is lost or preempted is retried until this many runs; "
        "each retry keeps the finished chunks and redoes only the rest. Bad input and errors "
        "of the job itself fail at once.",
    )
    retry_backoff_seconds: float = Field(
        default=10.0, ge=0,
        description="Wait before the first retry of the GPU step; it doubles for each retry "
        "after that.",
    )

    def with_controls(self, strength: float | None = None, stroke_scale: float | None = None,
                      preserve_colors: bool | None = None) -> ComputeSettings:
        """These settings with a run's own painting controls (None keeps the setting), checked
        against the same bounds."""
        given = {"strength": strength, "stroke_scale": stroke_scale,
                 "preserve_colors": preserve_colors}
        return ComputeSettings.model_validate(
            {**self.model_dump(), **{k: v for k, v in given.items() if v is not None}})

    def stylize_args(self) -> tuple[str, ...]:
        """The ``gpu.stylize`` options these settings set, after ``--input`` and ``--output``.

        Options left at 0 are not passed, so the job's own defaults apply.
        """
        args = ["--device", self.device, "--compile", self.compile]
        if self.strength is not None:
            args += ["--strength", repr(self.strength)]
        if self.stroke_scale != 1.0:
            args += ["--stroke-scale", repr(self.stroke_scale)]
        if self.preserve_colors:
            args.append("--preserve-colors")
        for option, value in (
            ("--batch-size", self.batch_size),
            ("--encoders", self.encoders),
            ("--encoder-threads", self.encoder_threads),
            ("--threads", self.threads),
            ("--max-waiting-batches", self.max_waiting_batches),
        ):
            if value:
                args += [option, str(value)]
        return tuple(args)


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
        description="Client id of the managed identity the Prefect side authenticates as, both "
        "to Azure ML and to the data account's job folders; unset lets DefaultAzureCredential "
        "pick (az login, workload identity, managed identity).",
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
        description="Registered environment 'name:version' to run in; unset builds the image "
        "of deployments/azureml/image (Open MPI + CUDA base image, torch for that CUDA, mpi4py "
        "built against that Open MPI).",
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
    keep_job_folders: bool = Field(
        default=False,
        description="Keep a job's input and output folders in the data account after it "
        "succeeds (they are always kept after a failure, so a rerun resumes from them).",
    )
    experiment_name: str = Field(default="restyle", description="Azure ML experiment name.")
    poll_seconds: float = Field(
        default=15.0, gt=0, description="Seconds between job status polls (and progress updates)."
    )
    queue_timeout_minutes: float = Field(
        default=60.0, gt=0,
        description="Longest a submitted job may wait to start (queued for nodes, image build "
        "on first use, preparing) before it is canceled and the run fails saying so; a job "
        "without low-priority quota would otherwise wait forever.",
    )
    run_timeout_minutes: float = Field(
        default=360.0, gt=0,
        description="Longest a job may run once started before it is canceled and the run "
        "fails saying so. Azure ML also gets both deadlines plus ten minutes as the job's own "
        "limit, which stops it even when the Prefect side is gone.",
    )
    sas_minutes: int = Field(
        default=60,
        ge=1,
        le=7 * 24 * 60,
        description="Lifetime of the read-only user-delegation SAS that signs the result link "
        "on a real storage account (tasks.compute.azureml.links.result_link).",
    )


class BridgeSettings(BaseModel):
    """The Event Grid webhook bridge (deployments/eventgrid_bridge.py)."""

    shared_secret: SecretStr | None = Field(
        default=None,
        description="Secret expected in the webhook URL query (?code=...). The bridge refuses "
        "to start without this or Entra ID (entra_tenant_id + entra_audience).",
    )
    entra_tenant_id: str | None = Field(
        default=None,
        description="Tenant of the Entra application protecting the webhook: Event Grid then "
        "sends a bearer token instead of a secret in the URL (deployments/infra/README.md).",
    )
    entra_audience: list[str] = Field(
        default_factory=list,
        description="Audiences accepted in Event Grid's token: the Entra application's client id "
        "and/or its Application ID URI (api://...).",
    )
    entra_role: str = Field(
        default="AzureEventGridSecureWebhookSubscriber",
        description="App role of that application that Event Grid's token must carry.",
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
