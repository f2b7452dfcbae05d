"""The Azure ML job for a :class:`~tasks.compute.base.GpuJob`, built offline (no Azure calls).

One job becomes::

    python -m <module> --input ${{inputs.input}} --output ${{outputs.output}} <args> --device cuda

run by Azure ML's MPI launcher with ``gpus_per_node`` ranks on each of ``instance_count`` nodes,
in the image of ``deployments/azureml/image`` and with a code snapshot of ``gpu/`` only. The
specs under ``deployments/azureml/`` ship as package data of ``deployments.azureml``.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import shutil
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from tasks.compute.azureml.folders import local_files, sha256
from tasks.compute.base import GpuJob
from tasks.settings import AzureMLSettings

if TYPE_CHECKING:
    from azure.ai.ml.entities import AmlCompute, Command, Environment

FLOW_RUN_TAG = "restyle.flow_run_id"
"""Tag holding the Prefect flow run id of the job, so the run's hooks can find it."""
TIMEOUT_MARGIN_SECONDS = 600
"""Added to the queue and run deadlines for Azure ML's own limit on the job, so the backend's
deadlines, which say why, fire first; Azure's stops the job when the Prefect side is gone."""


def spec_dir() -> Path:
    """The installed ``deployments/azureml`` folder (package data)."""
    folder = resources.files("deployments.azureml")
    if not isinstance(folder, Path):
        raise RuntimeError("deployments.azureml must be installed as files, not inside an archive")
    return folder


def environment_spec() -> Path:
    return spec_dir() / "environment.yaml"


def compute_spec() -> Path:
    return spec_dir() / "compute.yaml"


def job_key(job: GpuJob) -> str:
    """Stable folder name for ``job``: its display name plus a digest of what it computes.

    The same module, arguments and input files give the same key, so every attempt (and every
    rerun of the flow for the same input) shares one output folder.
    """
    digest = hashlib.sha256(f"{job.module}\0{shlex.join(job.args)}\0".encode())
    for path, rel in local_files(job.input_dir):
        digest.update(f"{rel}\0{path.stat().st_size}\0{sha256(path)}\0".encode())
    slug = re.sub(r"[^a-z0-9-]+", "-", job.name.lower()).strip("-")[:40] or "job"
    return f"{slug}-{digest.hexdigest()[:12]}"


@dataclass(frozen=True)
class JobPaths:
    """Where one job's folders live in the datastore."""

    datastore: str
    prefix: str

    @classmethod
    def for_job(cls, settings: AzureMLSettings, key: str) -> JobPaths:
        return cls(datastore=settings.data_datastore, prefix=f"{settings.job_prefix}/{key}")

    @property
    def input_prefix(self) -> str:
        return f"{self.prefix}/input"

    @property
    def output_prefix(self) -> str:
        return f"{self.prefix}/output"

    def uri(self, sub_prefix: str) -> str:
        return f"azureml://datastores/{self.datastore}/paths/{sub_prefix}"


def gpu_package() -> Path:
    import gpu

    return Path(gpu.__file__).resolve().parent


def stage_code(dest_root: Path, sources: dict[str, Path] | None = None) -> Path:
    """Copy ``sources`` (name in the snapshot: file or folder; by default the ``gpu/`` package)
    into a content-addressed folder under ``dest_root`` and return that folder.

    The command runs ``python -m gpu.<module>``, so the snapshot root must *contain* ``gpu/``.
    Only source and small metadata travel: caches and weight files (the job reads its model
    from the input folder) stay behind, which keeps the snapshot to a few kilobytes.
    """
    sources = sources or {"gpu": gpu_package()}
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.safetensors", ".*")
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / "code"
        staged.mkdir()
        for name, source in sources.items():
            if source.is_dir():
                shutil.copytree(source, staged / name, ignore=ignore)
            else:
                shutil.copy2(source, staged / name)
        digest = hashlib.sha256()
        for path, rel in local_files(staged):
            digest.update(f"{rel}\0".encode() + path.read_bytes())
        target = dest_root / digest.hexdigest()[:16]
        if not target.exists():
            dest_root.mkdir(parents=True, exist_ok=True)
            partial = Path(tempfile.mkdtemp(prefix=".code.", dir=dest_root))
            shutil.copytree(staged, partial / "code")
            try:
                os.replace(partial / "code", target)
            except OSError:  # another process staged the same content first
                if not target.exists():
                    raise
            shutil.rmtree(partial, ignore_errors=True)
    return target


def resolve_environment(settings: AzureMLSettings) -> str | Environment:
    """The registered environment named in settings, else the image that environment.yaml
    builds from ``deployments/azureml/image``.

    The inline environment is anonymous (no name or version) so Azure ML identifies it by
    content hash and never collides with a registered ``restyle-gpu`` of different content.
    """
    if settings.environment:
        name = settings.environment
        return name if name.startswith("azureml:") else f"azureml:{name}"
    from azure.ai.ml import load_environment
    from azure.ai.ml.entities import BuildContext, Environment

    spec = load_environment(environment_spec())
    if spec.build is None or spec.build.path is None:
        raise RuntimeError(f"{environment_spec()} names no build context")
    context = environment_spec().parent / spec.build.path  # relative to the YAML's folder
    return Environment(
        build=BuildContext(path=str(context), dockerfile_path=spec.build.dockerfile_path),
        description=spec.description,
    )


def load_compute_spec(settings: AzureMLSettings) -> AmlCompute:
    """``deployments/azureml/compute.yaml`` with the name, tier and overrides of settings."""
    from azure.ai.ml import load_compute

    compute = load_compute(compute_spec())
    compute.name = settings.compute
    compute.tier = "low_priority" if settings.low_priority else "dedicated"
    if settings.vm_size:
        compute.size = settings.vm_size
    if settings.max_instances:
        compute.max_instances = settings.max_instances
    return compute


def with_cuda_required(args: tuple[str, ...]) -> tuple[str, ...]:
    """``args`` with ``--device cuda``: a GPU node whose GPU torch cannot use must fail the job
    at once (the job says why) rather than stylize on its CPU while the GPU bills."""
    out = list(args)
    for index, arg in enumerate(out[:-1]):
        if arg == "--device":
            out[index + 1] = "cuda"
            return tuple(out)
    return (*out, "--device", "cuda")


def service_timeout_seconds(settings: AzureMLSettings) -> int:
    """Azure ML's own limit on a job: both deadlines and a margin (whether the service counts
    queued time is not documented, so it is counted)."""
    minutes = settings.queue_timeout_minutes + settings.run_timeout_minutes
    return int(minutes * 60) + TIMEOUT_MARGIN_SECONDS


def build_command_job(
    job: GpuJob,
    settings: AzureMLSettings,
    *,
    paths: JobPaths,
    job_name: str,
    code_dir: Path,
    environment: str | Environment,
    attempt: int = 1,
) -> Command:
    """The Azure ML command job for one attempt at ``job`` (pure: no Azure calls).

    Args:
        job: The GPU job.
        settings: Cluster, distribution, datastore and deadline settings.
        paths: The job's stable datastore folders (see :func:`job_key`).
        job_name: Unique Azure ML job name of this attempt.
        code_dir: Folder containing ``gpu/`` (see :func:`stage_code`).
        environment: Registered environment reference or inline environment.
        attempt: 1 for the first submission, counted up on resubmission.
    """
    from azure.ai.ml import Input, MpiDistribution, Output, command
    from azure.ai.ml.constants import AssetTypes, InputOutputModes
    from azure.ai.ml.entities import ManagedIdentityConfiguration

    argv = ["python", "-m", job.module, "--input", "${{inputs.input}}"]
    argv += ["--output", "${{outputs.output}}"]
    # The ${{...}} placeholders must reach Azure ML verbatim, so only the free arguments are quoted.
    cmdline = " ".join(argv + [shlex.quote(arg) for arg in with_cuda_required(job.args)])
    identity = (
        ManagedIdentityConfiguration(client_id=settings.job_identity_client_id)
        if settings.job_identity_client_id
        else None
    )
    tags = {"restyle.key": paths.prefix.rsplit("/", 1)[-1], "restyle.attempt": str(attempt)}
    if job.flow_run_id:
        tags[FLOW_RUN_TAG] = job.flow_run_id
    return command(
        name=job_name,
        display_name=job.name,
        experiment_name=settings.experiment_name,
        description=f"restyle {job.module}, attempt {attempt}",
        tags=tags,
        command=cmdline,
        code=str(code_dir),
        environment=environment,
        environment_variables={"PYTHONUNBUFFERED": "1"},
        compute=settings.compute,
        instance_count=settings.instance_count,
        distribution=MpiDistribution(process_count_per_instance=settings.gpus_per_node),
        timeout=service_timeout_seconds(settings),
        inputs={
            "input": Input(
                type=AssetTypes.URI_FOLDER,
                path=paths.uri(paths.input_prefix),
                mode=InputOutputModes.RO_MOUNT,
            )
        },
        outputs={
            "output": Output(
                type=AssetTypes.URI_FOLDER,
                path=paths.uri(paths.output_prefix),
                mode=InputOutputModes.RW_MOUNT,
            )
        },
        identity=identity,
    )



def render_job_yaml(
    job: GpuJob, settings: AzureMLSettings, code_root: Path, attempt: int = 1
) -> str:
    """The YAML of the command job the backend would submit for ``job`` (no Azure calls)."""
    key = job_key(job)
    spec = build_command_job(
        job,
        settings,
        paths=JobPaths.for_job(settings, key),
        job_name=f"{key}-a{attempt}",
        code_dir=stage_code(code_root),
        environment=resolve_environment(settings),
        attempt=attempt,
    )
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "job.yaml"
        spec._to_job().dump(out)  # Command -> CommandJob: the entity create_or_update sends
        return out.read_text()
