"""The smoke job: the first thing to run against a new Azure deployment, done in minutes.

It submits a tiny MPI job (:mod:`~tasks.compute.azureml.smoke_node`) through the real backend,
with the real image, cluster, identities and datastore, and checks each thing a first
deployment gets wrong, reporting pass or fail with the fix:

- the image builds and pulls (the job's Python started);
- CUDA is visible to torch on every rank;
- mpi4py runs an allgather across the ranks on the image's MPI (its version is reported);
- the job's identity reads and writes the jobs datastore;
- the worker can write, tag and delete blobs in the output container;
- the cluster scales back to zero.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.compute.azureml import smoke_node
from tasks.compute.azureml.backend import AzureMLBackend, Logger
from tasks.compute.azureml.folders import JobFolderStorage
from tasks.compute.azureml.redaction import redact
from tasks.compute.azureml.spec import JobPaths, job_key
from tasks.compute.base import GpuJob, GpuJobError
from tasks.settings import RestyleSettings
from tasks.storage import BlobStore

NODE_SCRIPT = Path(smoke_node.__file__)
SMOKE_BLOB_FOLDER = "restyle-smoke"


@dataclass(frozen=True)
class Check:
    """One check's outcome: ``passed`` is None when it was not checked."""

    name: str
    passed: bool | None
    detail: str
    fix: str = ""

    def line(self) -> str:
        mark = {True: "PASS", False: "FAIL", None: "SKIP"}[self.passed]
        text = f"{mark}  {self.name}: {self.detail}"
        return text + (f"\n      fix: {self.fix}" if self.fix and self.passed is False else "")


def run_smoke(
    settings: RestyleSettings,
    *,
    ml_client: Any,
    storage: JobFolderStorage,
    store: BlobStore,
    logger: Logger,
    scale_wait_seconds: float,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> list[Check]:
    """Run the smoke job and every check; never raises for a failed check."""
    token = secrets.token_hex(8)
    once = settings.model_copy(
        update={"compute": settings.compute.model_copy(update={"gpu_attempts": 1})}
    )
    ranks = settings.azureml.instance_count * settings.azureml.gpus_per_node
    with tempfile.TemporaryDirectory() as tmp:
        input_dir, output_dir = Path(tmp) / "input", Path(tmp) / "output"
        input_dir.mkdir()
        (input_dir / smoke_node.PROBE_NAME).write_text(f"restyle smoke {token}\n")
        job = GpuJob(module="smoke_node", input_dir=input_dir, output_dir=output_dir,
                     ranks=ranks, name="restyle smoke")
        error = _run_job(once, job, ml_client, storage, logger)
        report = _read_report(output_dir)
        expected_probe = hashlib.sha256((input_dir / smoke_node.PROBE_NAME).read_bytes())
    return [
        image_check(report, error),
        cuda_check(report, error),
        allgather_check(report, ranks),
        datastore_check(report, expected_probe.hexdigest()),
        worker_blob_check(store, settings.storage.output_container, token),
        scale_to_zero_check(ml_client, settings.azureml.compute, scale_wait_seconds, sleep, clock),
    ]


def _run_job(
    settings: RestyleSettings, job: GpuJob, ml_client: Any, storage: JobFolderStorage,
    logger: Logger,
) -> GpuJobError | None:
    """Run the smoke job; on failure fetch what it wrote anyway, then remove its folder."""
    backend = AzureMLBackend(settings, logger, ml_client=ml_client, storage=storage,
                             code_sources={"smoke_node.py": NODE_SCRIPT})
    try:
        backend.run(job)
        return None
    except GpuJobError as exc:
        paths = JobPaths.for_job(settings.azureml, job_key(job))
        try:
            storage.download_folder(paths.output_prefix, job.output_dir)
            storage.delete_folder(paths.prefix)
        except Exception as fetch_error:  # the job's own error is the one to report
            logger.warning("Could not fetch the smoke job's output: %s", redact(str(fetch_error)))
        return exc


def _read_report(output_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((output_dir / smoke_node.REPORT_NAME).read_text())
    except (OSError, ValueError):
        return None


def image_check(report: dict[str, Any] | None, error: GpuJobError | None) -> Check:
    name = "image builds and pulls"
    if report is not None:
        cuda = report["ranks"][0]["cuda"]
        return Check(name, True, f"Python {report['python']}, torch {cuda.get('torch')} "
                                 f"(CUDA {cuda.get('torch_cuda')}) started on the node")
    return Check(
        name, False, f"the job never ran its code: {error}",
        "Open the job's Studio page: an image build error shows in its build log. A pull "
        "error means the cluster's identity lacks AcrPull on the workspace's registry "
        "(deployments/infra).",
    )


def cuda_check(report: dict[str, Any] | None, error: GpuJobError | None) -> Check:
    name = "CUDA on every rank"
    if report is None:
        return Check(name, None, "not known: the job did not report")
    missing = [r for r in report["ranks"] if not r["cuda"]["available"]]
    if not missing:
        devices = sorted({f"{r['host']}: {r['cuda'].get('device')}" for r in report["ranks"]})
        return Check(name, True, f"{len(report['ranks'])} rank(s) on " + ", ".join(devices))
    reasons = "; ".join(f"rank {r['rank']} on {r['host']}: {r['cuda'].get('reason')}"
                        for r in missing)
    torch_cuda = report["ranks"][0]["cuda"].get("torch_cuda")
    build = f"built for CUDA {torch_cuda}" if torch_cuda else "a CPU-only build"
    return Check(
        name, False, reasons,
        f"The image's torch is {build}; it needs a CUDA build that the node's NVIDIA driver "
        "supports. Use a GPU VM size whose driver does, or pair the base image and torch's "
        "CUDA build anew in deployments/azureml/image.",
    )


def allgather_check(report: dict[str, Any] | None, ranks: int) -> Check:
    name = "mpi4py allgather across the ranks"
    if report is None:
        return Check(name, False, "the job did not report", "See the job's log tail above.")
    seen = sorted(r["rank"] for r in report["ranks"])
    library = report["mpi_library_version"].split(",")[0]  # "Open MPI v5.0.6, package: ..."
    versions = f"{library}, MPI {report['mpi_version']}, mpi4py {report['mpi4py_version']}"
    if seen == list(range(ranks)) and report["world_size"] == ranks:
        return Check(name, True, f"{ranks} rank(s) on {versions}")
    return Check(
        name, False, f"expected ranks 0-{ranks - 1}, got {seen} ({versions})",
        "Set RESTYLE_AZUREML__GPUS_PER_NODE to the VM's GPUs; mpi4py must be built against "
        "the image's MPI (deployments/azureml/image/Dockerfile).",
    )


def datastore_check(report: dict[str, Any] | None, expected_probe: str) -> Check:
    name = "job identity reads and writes the jobs datastore"
    fix = ("Grant the cluster's user-assigned identity Storage Blob Data Contributor on the "
           "data account's jobs container and set RESTYLE_AZUREML__JOB_IDENTITY_CLIENT_ID to "
           "its client id (deployments/infra).")
    if report is None:
        return Check(name, False, "no report came back through the output mount", fix)
    unread = [r for r in report["ranks"] if r["probe_sha256"] != expected_probe]
    if unread:
        return Check(name, False, "; ".join(f"rank {r['rank']}: {r['probe_sha256']}"
                                            for r in unread), fix)
    return Check(name, True, "every rank read the input mount; rank 0 wrote the output mount")


def worker_blob_check(store: BlobStore, container: str, token: str) -> Check:
    name = "worker writes, tags and deletes blobs"
    blob = f"{SMOKE_BLOB_FOLDER}/{token}.json"
    step = "write"
    try:
        store.upload_json(container, blob, {"restyle": "smoke"})
        step = "tag"
        store.set_tags(container, blob, {"restyle-smoke": token})
        if store.get_tags(container, blob).get("restyle-smoke") != token:
            raise RuntimeError("the tags read back differ")
        step = "delete"
        store.delete(container, blob)
    except Exception as exc:
        return Check(
            name, False, f"{step} of {container}/{blob} failed: {redact(str(exc))}",
            "The worker's identity needs Storage Blob Data Contributor on the data account, and "
            "Storage Blob Data Owner (or a role with tags/write) to tag blobs.",
        )
    return Check(name, True, f"wrote, tagged and deleted {container}/{blob}")


def scale_to_zero_check(
    ml_client: Any, cluster: str, wait_seconds: float,
    sleep: Callable[[float], None], clock: Callable[[], float],
) -> Check:
    name = "cluster scales back to zero"
    try:
        compute = ml_client.compute.get(cluster)
    except Exception as exc:
        return Check(name, False, f"cannot read cluster {cluster!r}: {redact(str(exc))}",
                     "Set RESTYLE_AZUREML__COMPUTE to the cluster's name.")
    idle = compute.idle_time_before_scale_down
    if compute.min_instances:
        return Check(name, False, f"min_instances is {compute.min_instances}: nodes never go",
                     "Set min_instances: 0 (deployments/azureml/compute.yaml).")
    if wait_seconds <= 0:
        return Check(name, None, f"min_instances is 0 and nodes idle out after {idle} s; "
                                 "not waited for")
    deadline = clock() + wait_seconds
    while True:
        nodes = list(ml_client.compute.list_nodes(cluster))
        if not nodes:
            return Check(name, True, f"no node left (min_instances 0, idle time {idle} s)")
        left = deadline - clock()
        if left <= 0:
            return Check(
                name, False, f"{len(nodes)} node(s) still up after {wait_seconds / 60:.0f} min",
                f"Nodes idle out after idle_time_before_scale_down ({idle} s); check for other "
                "jobs on the cluster, and wait longer (--scale-wait-minutes).",
            )
        sleep(min(30.0, left))
