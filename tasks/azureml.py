"""Azure ML compute backend: the GPU job as an MPI command job on a (low-priority) GPU cluster.

One :class:`~tasks.dispatch.GpuJob` becomes::

    python -m <module> --input ${{inputs.input}} --output ${{outputs.output}} <args>

run by Azure ML's MPI launcher with ``gpus_per_node`` ranks on each of ``instance_count`` nodes,
in the environment of ``deployments/azureml/`` and with a code snapshot of ``gpu/`` only.

Job folders live in the data account under one path per job *content*::

    <job_prefix>/<key>/input/    uploaded from GpuJob.input_dir  (ro_mount in the job)
    <job_prefix>/<key>/output/   written by the job                (rw_mount in the job)

``key`` is derived from the job's module, arguments and input files, never from the Azure ML job
name, so a resubmission after a preemption (or a rerun of the whole flow) mounts the same
output folder, sees the chunks already done (``gpu/jobdir.py``) and redoes only the missing ones.

Preemption is retried here, inside the backend, with exponential backoff up to
``max_attempts`` submissions; every other failure fails fast. Credentials come from
azure-identity only; text that leaves this module (logs, errors) goes through :func:`redact`.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import logging
import os
import re
import secrets
import shlex
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote

from azure.core.exceptions import (
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.storage.blob import (
    BlobSasPermissions,
    BlobServiceClient,
    ContainerClient,
    UserDelegationKey,
    generate_blob_sas,
)

from tasks.dispatch import GpuJob, GpuJobError, GpuJobResult, ProgressCallback
from tasks.settings import REPO_ROOT, AzureMLSettings, RestyleSettings

if TYPE_CHECKING:
    from azure.ai.ml import MLClient
    from azure.ai.ml.entities import AmlCompute, Command, Environment
    from azure.core.credentials import TokenCredential

ENVIRONMENT_SPEC = REPO_ROOT / "deployments" / "azureml" / "environment.yaml"
COMPUTE_SPEC = REPO_ROOT / "deployments" / "azureml" / "compute.yaml"
GPU_PACKAGE = REPO_ROOT / "gpu"

MAX_POLL_FAILURES = 20
"""Consecutive failed status polls tolerated before giving up on a job (and cancelling it)."""
TERMINAL_STATUSES = frozenset({"Completed", "Failed", "Canceled", "NotResponding", "Paused"})

_PREEMPTION = re.compile(
    # Whole words only: a path such as /tmp/test_preemption_x inside an error must not count.
    r"PreemptionError|\bpreempt(?:ed|ion)?\b|low[- ]?priority[^.]*(evict|reclaim)|evicted"
    r"|node[^.]{0,40}\blost\b|lost node"
    r"|NodeLost|node[^.]{0,40}(was removed|became unusable|unusable)",
    re.IGNORECASE,
)
_SECRET_PATTERNS = (
    re.compile(r"(sig=)[^&\s\"']+", re.IGNORECASE),
    re.compile(r"((?:Account|Shared)Key=)[^;\s\"']+", re.IGNORECASE),
    re.compile(r"(Bearer )[A-Za-z0-9._~+/=-]+"),
)
# jobs.stream() writes to sys.stdout; redirecting stdout is process-wide, so one at a time.
_STDOUT_LOCK = threading.Lock()


def redact(text: str) -> str:
    """``text`` with SAS signatures, account keys and bearer tokens replaced by ``***``."""
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(r"\1***", text)
    return text


def is_preemption(error: str) -> bool:
    """Whether a job error means the node went away (retry) rather than the job failing."""
    return bool(_PREEMPTION.search(error))


# --------------------------------------------------------------------------- job folders


class JobFolderStorage(Protocol):
    """Moves job folders between this machine and the datastore behind the job's mounts."""

    def upload_folder(self, local: Path, prefix: str) -> int:
        """Upload every file under ``local`` to ``prefix/<relative path>``; returns files sent."""
        ...

    def download_folder(self, prefix: str, local: Path) -> int:
        """Download every blob under ``prefix/`` into ``local``; returns files fetched."""
        ...


_SHA_KEY = "restylesha256"


def _sha256(path: Path) -> str:
    """SHA-256 of a file; memoized by (path, size, mtime) because chunk folders are large and
    both :func:`job_key` and :meth:`BlobJobStorage.upload_folder` need every digest."""
    stat = path.stat()
    return _sha256_of(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=4096)
def _sha256_of(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _is_temporary(name: str) -> bool:
    """``gpu/jobdir.py`` writes ``.<name>.<random>.tmp`` and renames; such files are not results."""
    base = name.rsplit("/", 1)[-1]
    return base.startswith(".") and base.endswith(".tmp")


def _local_files(root: Path) -> Iterator[tuple[Path, str]]:
    """Files under ``root`` and their POSIX relative paths, skipping temporary ``.*.tmp`` files."""
    for path in sorted(root.rglob("*")):
        if path.is_file() and not _is_temporary(path.name):
            yield path, path.relative_to(root).as_posix()


class BlobJobStorage:
    """:class:`JobFolderStorage` over one blob container (the datastore's container).

    Uploads skip blobs whose stored SHA-256 (blob metadata) matches the local file, so a retry
    re-sends nothing; downloads skip local files of the blob's size and land atomically (temporary
    name, then ``os.replace``) because the flow reads the output folder while it fills.
    """

    def __init__(self, container: ContainerClient) -> None:
        self.container = container

    @classmethod
    def from_settings(
        cls, settings: AzureMLSettings, credential: TokenCredential
    ) -> BlobJobStorage:
        """The job container of the data account, authenticated with ``credential`` (no key)."""
        if not settings.data_account_url:
            raise GpuJobError("azureml.data_account_url is not set (https://<account>.blob...)")
        service = BlobServiceClient(settings.data_account_url, credential=credential)
        return cls(service.get_container_client(settings.data_container))

    def upload_folder(self, local: Path, prefix: str) -> int:
        remote = {
            props.name: (props.metadata or {}).get(_SHA_KEY)
            for props in self.container.list_blobs(
                name_starts_with=f"{prefix}/", include=["metadata"]
            )
        }
        sent = 0
        for path, rel in _local_files(local):
            name = f"{prefix}/{rel}"
            digest = _sha256(path)
            if remote.get(name) == digest:
                continue
            with path.open("rb") as fh:
                self.container.upload_blob(name, fh, overwrite=True, metadata={_SHA_KEY: digest})
            sent += 1
        return sent

    def download_folder(self, prefix: str, local: Path) -> int:
        fetched = 0
        for props in self.container.list_blobs(name_starts_with=f"{prefix}/"):
            if _is_temporary(props.name):  # left by a preempted writer, or still being written
                continue
            rel = props.name[len(prefix) + 1 :]
            dest = (local / rel).resolve()
            if not dest.is_relative_to(local.resolve()) or rel.endswith("/"):
                raise GpuJobError(f"refusing to download blob outside the job folder: {rel!r}")
            if dest.exists() and dest.stat().st_size == props.size:
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
            try:
                with os.fdopen(fd, "wb") as fh:
                    self.container.download_blob(props.name).readinto(fh)
                os.replace(tmp, dest)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            fetched += 1
        return fetched


def user_delegation_read_url(
    service: BlobServiceClient, container: str, blob: str, minutes: int = 60
) -> str:
    """A read-only HTTPS URL for one blob, signed with a user-delegation key (no account key).

    The key is requested with the caller's Entra ID credential and lives as long as the SAS, so
    the URL grants read on this one blob for ``minutes`` and nothing else. Hand it to a person;
    never log it (:func:`redact` strips the signature if it ends up in text anyway).
    """
    start = datetime.now(UTC) - timedelta(minutes=5)  # tolerate clock skew
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


# --------------------------------------------------------------------------- job definition


def job_key(job: GpuJob) -> str:
    """Stable folder name for ``job``: its display name plus a digest of what it computes.

    The same module, arguments and input files give the same key, so every attempt (and every
    rerun of the flow for the same input) shares one output folder.
    """
    digest = hashlib.sha256(f"{job.module}\0{shlex.join(job.args)}\0".encode())
    for path, rel in _local_files(job.input_dir):
        digest.update(f"{rel}\0{path.stat().st_size}\0{_sha256(path)}\0".encode())
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


def stage_code(dest_root: Path) -> Path:
    """Copy the ``gpu/`` package into a content-addressed folder and return that folder.

    The command runs ``python -m gpu.<module>``, so the snapshot root must *contain* ``gpu/``.
    Only source and small metadata travel: caches and weight files (the job reads its model
    from the input folder) stay behind, which keeps the snapshot to a few kilobytes.
    """
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.safetensors", ".*")
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / "gpu"
        shutil.copytree(GPU_PACKAGE, staged, ignore=ignore)
        digest = hashlib.sha256()
        for path, rel in _local_files(staged):
            digest.update(f"{rel}\0".encode() + path.read_bytes())
        target = dest_root / digest.hexdigest()[:16]
        if not (target / "gpu").exists():
            target.mkdir(parents=True, exist_ok=True)
            partial = Path(tempfile.mkdtemp(prefix=".gpu.", dir=target))
            shutil.copytree(staged, partial / "gpu")
            os.replace(partial / "gpu", target / "gpu")
            partial.rmdir()
    return target


def resolve_environment(settings: AzureMLSettings) -> str | Environment:
    """The registered environment named in settings, else the inline one of environment.yaml.

    The inline environment is made anonymous (no name or version) so Azure ML identifies it by
    content hash and never collides with a registered ``restyle-gpu`` of different content.
    """
    if settings.environment:
        name = settings.environment
        return name if name.startswith("azureml:") else f"azureml:{name}"
    from azure.ai.ml import load_environment
    from azure.ai.ml.entities import Environment

    spec = load_environment(ENVIRONMENT_SPEC)
    return Environment(
        image=settings.image or spec.image,
        conda_file=spec.conda_file,
        description=spec.description,
    )


def load_compute_spec(settings: AzureMLSettings) -> AmlCompute:
    """``deployments/azureml/compute.yaml`` with the name, tier and overrides of settings."""
    from azure.ai.ml import load_compute

    compute = load_compute(COMPUTE_SPEC)
    compute.name = settings.compute
    compute.tier = "low_priority" if settings.low_priority else "dedicated"
    if settings.vm_size:
        compute.size = settings.vm_size
    if settings.max_instances:
        compute.max_instances = settings.max_instances
    return compute


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
        settings: Cluster, distribution and datastore settings.
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
    cmdline = " ".join(argv + [shlex.quote(arg) for arg in job.args])
    identity = (
        ManagedIdentityConfiguration(client_id=settings.job_identity_client_id)
        if settings.job_identity_client_id
        else None
    )
    return command(
        name=job_name,
        display_name=job.name,
        experiment_name=settings.experiment_name,
        description=f"restyle {job.module}, attempt {attempt}",
        tags={"restyle.key": paths.prefix.rsplit("/", 1)[-1], "restyle.attempt": str(attempt)},
        command=cmdline,
        code=str(code_dir),
        environment=environment,
        environment_variables={"PYTHONUNBUFFERED": "1"},
        compute=settings.compute,
        instance_count=settings.instance_count,
        distribution=MpiDistribution(process_count_per_instance=settings.gpus_per_node),
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


def make_credential(settings: AzureMLSettings) -> TokenCredential:
    """``DefaultAzureCredential``, pinned to the user-assigned identity when one is configured."""
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


# --------------------------------------------------------------------------- backend


class AzureMLBackend:
    """:class:`~tasks.dispatch.ComputeBackend` submitting the GPU job to Azure ML.

    Args:
        settings: The settings tree (``settings.azureml`` is used).
        logger: Receives status changes and the job's log lines (a Prefect run logger works).
        ml_client: Workspace client; built from settings with azure-identity when omitted.
        storage: Job folder storage; the data account's job container when omitted.
    """

    name = "azureml"

    def __init__(
        self,
        settings: RestyleSettings,
        logger: logging.Logger | logging.LoggerAdapter[Any] | None = None,
        *,
        ml_client: MLClient | None = None,
        storage: JobFolderStorage | None = None,
    ) -> None:
        self.settings = settings.azureml
        self.code_root = settings.work_dir / "azureml-code"
        self.logger = logger or logging.getLogger(__name__)
        credential = None
        if ml_client is None or storage is None:
            credential = make_credential(self.settings)
        self.ml_client = ml_client or make_ml_client(self.settings, credential)
        self.storage = storage or BlobJobStorage.from_settings(self.settings, credential)
        self._stop = threading.Event()
        self._active: set[str] = set()
        self._active_lock = threading.Lock()
        self._checked_code_datastore = False

    def cancel_active(self) -> None:
        """Cancel every job this backend is waiting on (for a flow's ``on_cancellation`` hook).

        ``run`` in another thread then stops polling and raises :class:`GpuJobError`.
        """
        self._stop.set()
        with self._active_lock:
            names = list(self._active)
        for name in names:
            self._cancel(name)

    def run(self, job: GpuJob, on_progress: ProgressCallback | None = None) -> GpuJobResult:
        """Upload the input, submit, wait (resubmitting after preemption), download the output.

        Raises:
            GpuJobError: The job failed (``retryable`` when the last failure was a preemption
                and attempts ran out), was canceled, or could not be submitted.
        """
        started = time.monotonic()
        self._check_code_datastore()
        key = job_key(job)
        paths = JobPaths.for_job(self.settings, key)
        sent = self.storage.upload_folder(job.input_dir, paths.input_prefix)
        if job.output_dir.exists():  # finished chunks of an earlier local run count too
            sent += self.storage.upload_folder(job.output_dir, paths.output_prefix)
        self.logger.info("Azure ML job folder %s: %d file(s) uploaded", paths.prefix, sent)
        ranks = self.settings.instance_count * self.settings.gpus_per_node
        if ranks != job.ranks:
            self.logger.info(
                "Azure ML runs %d rank(s) (%d node(s) x %d GPU(s)); the job asked for %d",
                ranks,
                self.settings.instance_count,
                self.settings.gpus_per_node,
                job.ranks,
            )
        code_dir = stage_code(self.code_root)
        environment = resolve_environment(self.settings)
        links: dict[str, str] = {}
        retry_reasons: list[str] = []
        attempt = 0
        while True:
            attempt += 1
            job_name = f"{key}-a{attempt}-{secrets.token_hex(3)}"
            spec = build_command_job(
                job,
                self.settings,
                paths=paths,
                job_name=job_name,
                code_dir=code_dir,
                environment=environment,
                attempt=attempt,
            )
            status, log_text, error = self._submit_and_wait(spec, job, paths, on_progress, links)
            if status == "Completed":
                break
            if status == "Canceled":
                raise GpuJobError(f"Azure ML job {job_name} was canceled", _tail(log_text))
            reason = redact(error or f"job ended in state {status}")
            retryable = is_preemption(reason)
            if retryable and attempt < self.settings.max_attempts:
                retry_reasons.append(f"attempt {attempt} ({job_name}): {reason}")
                delay = self.settings.backoff_seconds * 2 ** (attempt - 1)
                self.logger.warning(
                    "Azure ML job %s was preempted; resubmitting in %.0f s (attempt %d of %d)",
                    job_name,
                    delay,
                    attempt + 1,
                    self.settings.max_attempts,
                )
                if self._stop.wait(delay):
                    raise GpuJobError("Azure ML job canceled while waiting to resubmit")
                continue
            tried = f" after {attempt} attempt(s)" if attempt > 1 else ""
            raise GpuJobError(
                f"Azure ML job {job_name} {status.lower()}{tried}: {reason}",
                _tail(log_text),
                retryable=retryable,
            )
        self._sync_output(paths, job.output_dir)
        if on_progress:
            self._report_progress(paths, job, on_progress)
        return GpuJobResult(
            backend=self.name,
            seconds=time.monotonic() - started,
            attempts=attempt,
            retry_reasons=retry_reasons,
            log_tail=_tail(log_text),
            links=links,
        )

    def _submit_and_wait(
        self,
        spec: Command,
        job: GpuJob,
        paths: JobPaths,
        on_progress: ProgressCallback | None,
        links: dict[str, str],
    ) -> tuple[str, str, str | None]:
        """Submit one attempt and poll it to a terminal state: (status, log text, error)."""
        try:
            submitted = self.ml_client.jobs.create_or_update(spec)
        except (ServiceRequestError, ServiceResponseError) as exc:
            raise GpuJobError(
                f"could not reach Azure ML to submit {spec.name}: {redact(str(exc))}",
                retryable=True,
            ) from None
        except Exception as exc:  # validation, quota, permissions: retrying will not help
            raise GpuJobError(f"Azure ML refused job {spec.name}: {redact(str(exc))}") from None
        name = submitted.name
        if submitted.studio_url:
            links["azureml-studio"] = submitted.studio_url
        self.logger.info("Submitted Azure ML job %s: %s", name, submitted.studio_url or "(no URL)")
        with self._active_lock:
            self._active.add(name)
        try:
            status = self._poll(name, job, paths, on_progress)
        except BaseException:
            # KeyboardInterrupt, Prefect's cancellation/termination, losing track of the job:
            # whatever stops us waiting must not leave GPUs billing in the cloud.
            self._cancel(name)
            raise
        finally:
            with self._active_lock:
                self._active.discard(name)
        log_text, error = self._collect_logs(name)
        return status, log_text, error

    def _poll(
        self, name: str, job: GpuJob, paths: JobPaths, on_progress: ProgressCallback | None
    ) -> str:
        last = None
        failures = 0
        while True:
            try:
                status = self.ml_client.jobs.get(name).status or "Unknown"
                failures = 0
            except (ServiceRequestError, ServiceResponseError, HttpResponseError) as exc:
                # A network blip or a 5xx/429 must not cancel a healthy GPU job.
                transient = not isinstance(exc, HttpResponseError) or (
                    exc.status_code is not None
                    and (exc.status_code >= 500 or exc.status_code in (408, 429))
                )
                failures += 1
                if not transient or failures > MAX_POLL_FAILURES:
                    raise GpuJobError(
                        f"lost track of Azure ML job {name}: {redact(str(exc))}",
                        retryable=transient,
                    ) from None
                self.logger.warning(
                    "Polling Azure ML job %s failed (%d in a row), retrying: %s",
                    name,
                    failures,
                    redact(str(exc)),
                )
                if self._stop.wait(self.settings.poll_seconds):
                    raise GpuJobError(f"Azure ML job {name} canceled by the caller") from None
                continue
            if status != last:
                self.logger.info("Azure ML job %s: %s", name, status)
                last = status
            if status in TERMINAL_STATUSES:
                return status
            if on_progress:
                self._report_progress(paths, job, on_progress)
            if self._stop.wait(self.settings.poll_seconds):
                raise GpuJobError(f"Azure ML job {name} canceled by the caller")

    def _report_progress(self, paths: JobPaths, job: GpuJob, on_progress: ProgressCallback) -> None:
        """Mirror the done reports (progress is read from the local output folder), then report.

        Progress is cosmetic: a storage hiccup or a failing progress artifact is logged, never
        allowed to cancel the GPU job. Interrupts (``BaseException``) still propagate.
        """
        try:
            self._sync_output(paths, job.output_dir, only_reports=True)
            on_progress()
        except Exception as exc:
            self.logger.warning("Progress update failed (job continues): %s", redact(str(exc)))

    def _sync_output(self, paths: JobPaths, output_dir: Path, only_reports: bool = False) -> None:
        from gpu.jobdir import DONE_DIR

        if only_reports:
            prefix = f"{paths.output_prefix}/{DONE_DIR}"
            self.storage.download_folder(prefix, output_dir / DONE_DIR)
        else:
            fetched = self.storage.download_folder(paths.output_prefix, output_dir)
            self.logger.info("Downloaded %d output file(s) from %s", fetched, paths.output_prefix)

    def _cancel(self, name: str) -> None:
        try:
            self.ml_client.jobs.begin_cancel(name)
            self.logger.warning("Requested cancellation of Azure ML job %s", name)
        except Exception as exc:  # cancelling is best effort; the cause matters more
            self.logger.error("Could not cancel Azure ML job %s: %s", name, redact(str(exc)))

    def _collect_logs(self, name: str) -> tuple[str, str | None]:
        """The job's logs (forwarded to the logger) and, for a failed job, its error.

        ``jobs.stream`` on a finished job prints every log file and, for a failed job, raises
        with the job's error; it is the SDK's public route to both.
        """
        buffer = io.StringIO()
        error = None
        with _STDOUT_LOCK, contextlib.redirect_stdout(buffer):
            try:
                self.ml_client.jobs.stream(name)
            except ResourceNotFoundError as exc:
                error = f"job vanished: {exc}"
            except Exception as exc:  # JobException carries the job's error
                error = str(exc)
        text = redact(buffer.getvalue())
        for line in text.splitlines():
            if line.strip():
                self.logger.info("[%s] %s", name, line)
        return text, error

    def _check_code_datastore(self) -> None:
        """Warn once when code snapshots would land in an unexpected (data) datastore."""
        if self._checked_code_datastore:
            return
        self._checked_code_datastore = True
        try:
            default = self.ml_client.datastores.get_default().name
        except Exception as exc:  # a missing permission must not block the job
            self.logger.warning("Could not read the default datastore: %s", redact(str(exc)))
            return
        if default != self.settings.code_datastore:
            self.logger.warning(
                "Workspace default datastore is %r, expected %r: code snapshots go there",
                default,
                self.settings.code_datastore,
            )


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.splitlines()[-lines:])


def render_job_yaml(
    job: GpuJob, settings: AzureMLSettings, code_root: Path, attempt: int = 1
) -> str:
    """The YAML of the command job that :class:`AzureMLBackend` would submit (no Azure calls)."""
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


__all__ = [
    "AzureMLBackend",
    "BlobJobStorage",
    "JobFolderStorage",
    "JobPaths",
    "build_command_job",
    "is_preemption",
    "job_key",
    "load_compute_spec",
    "redact",
    "render_job_yaml",
    "resolve_environment",
    "sign_blob_read_url",
    "stage_code",
    "user_delegation_read_url",
]
