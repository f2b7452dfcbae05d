"""Settings of the Azure-only parts: the Azure ML compute backend and the Event Grid bridge."""

from __future__ import annotations

from pydantic import BaseModel, Field, SecretStr


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
        "of deployments/azureml/image (Open MPI + CUDA 12 base image, conda-forge torch built "
        "for CUDA 12, mpi4py built against that Open MPI).",
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
