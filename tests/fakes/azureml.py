"""The one fake of Azure ML's control plane, shared by every test that needs Azure ML.

Only what the project calls is modelled, and it behaves as azure-ai-ml 1.35.2 does against the
service: ``jobs.create_or_update`` accepts the real ``Command`` entity and serializes it to the
REST body the SDK would send (a bad entity fails there); ``jobs.get`` returns the job entity
walking Azure's states (NotStarted -> Queued -> Running -> Completed / Failed / Canceled, and
CancelRequested after ``begin_cancel``); ``jobs.stream`` on a finished job prints only its
header and summary and raises ``JobException`` with the error of a failed job; ``jobs.download``
refuses an unfinished job and writes the default output's logs as the service lays them out
(``artifacts/user_logs/std_log_process_<rank>.txt``); ``jobs.list`` lists newest first;
``compute.get``/``compute.list_nodes`` report the cluster, whose nodes stay up a few polls after
the last job. The job datastore is a real blob container (Azurite).

What runs on the node is pluggable: :class:`ChunkWriterNode` does what the GPU job does to its
``rw_mount``, one chunk per poll, deterministically; :class:`CommandNode` mounts the job's
folders (downloads), runs the submitted command line for real under ``mpiexec`` from the
submitted code snapshot, and flushes the output back.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from azure.ai.ml.entities import AmlCompute, Command, CommandJob, JobService
from azure.ai.ml.exceptions import ErrorCategory, ErrorTarget, JobException
from azure.storage.blob import ContainerClient

from gpu.jobdir import DONE_DIR, ChunkReport, JobManifest, read_manifest
from tasks.compute.azureml.folders import BlobJobStorage
from tasks.compute.local import mpiexec_path

DATASTORE = "restyle_jobs"
SIGNATURE = "SECRETSIGNATURE"
LEAKY_URL = f"https://acct.blob.core.windows.net/c/x.mkv?sv=2025-01-05&sig={SIGNATURE}%3D"
"""Text a careless job or service hands back: neither its signature nor a key may pass on."""
PREEMPTION_ERROR = {
    "code": "ServiceError",
    "message": f"PreemptionError: the low-priority node running the job was preempted while "
    f"writing {LEAKY_URL}",
}
TERMINAL = frozenset({"Completed", "Failed", "Canceled"})
NO_CUDA_LOG = (
    "UserWarning: CUDA initialization: The NVIDIA driver on your system is too old (found "
    "version 12040). Please update your GPU driver.\n"
    "gpu.stylize: error: --device cuda: no CUDA device is available on this node\n"
)
"""What a rank prints when the image's torch cannot use the node's GPU."""


def user_error(returncode: int | None, detail: str = "") -> dict[str, str]:
    """Azure ML's error for a user process that exited non-zero."""
    return {
        "code": "UserError",
        "message": f"Execution failed. User process 'python' exited with status code "
        f"{returncode}. {detail}Last output fetched {LEAKY_URL}",
    }


@dataclass
class Script:
    """What the cluster does with one submission.

    ``complete`` runs the job to the end; ``preempt`` and ``fail`` stop it after ``chunks``
    chunks and report a PreemptionError or the user process's exit status; ``hang`` stays
    Running until canceled; ``stuck-queued`` never gets a node; ``canceled-remotely`` is
    canceled in Studio once running; ``no-cuda`` lands on a node whose driver the image's
    torch cannot use (:class:`ChunkWriterNode` only; :class:`CommandNode` finds that for real).
    """

    outcome: str
    chunks: int = 10**6


@dataclass
class FakeJob:
    """One submitted Azure ML job and what its node did."""

    entity: CommandJob
    script: Script
    command: str
    ranks: int
    code_dir: Path
    input_prefix: str
    output_prefix: str
    rest: Any
    error: dict[str, str] | None = None
    logs: dict[int, str] = field(default_factory=dict)
    cancel_requested: bool = False
    processed: list[int] = field(default_factory=list)
    returncode: int | None = None
    pending_at_start: list[str] = field(default_factory=list)
    written: list[str] = field(default_factory=list)
    thread: threading.Thread | None = None
    process: subprocess.Popen[str] | None = None
    node_error: str | None = None

    @property
    def name(self) -> str:
        return str(self.entity.name)

    @property
    def status(self) -> str:
        return str(self.entity.status)

    @status.setter
    def status(self, value: str) -> None:
        self.entity._status = value

    @property
    def chunks_written(self) -> list[str]:
        """Stems of the chunks whose done report this job's process wrote (CommandNode)."""
        prefix = f"{DONE_DIR}/"
        return [p[len(prefix) : -len(".json")] for p in self.written if p.startswith(prefix)]


class Node(Protocol):
    """What runs a job once it has a node; the control plane asks while the job is Running."""

    def start(self, job: FakeJob) -> None: ...

    def step(self, job: FakeJob) -> str | None:
        """Advance the job; its terminal status once it has ended, else None."""
        ...

    def stop(self, job: FakeJob) -> bool:
        """Stop a job being canceled; True once nothing runs any more."""
        ...


class ChunkWriterNode:
    """Stylizes one chunk per poll straight into the datastore, as the GPU job writes its
    ``rw_mount`` (the chunk's bytes reversed, then its done report)."""

    def __init__(self, datastore: ContainerClient) -> None:
        self.datastore = datastore

    def start(self, job: FakeJob) -> None:
        job.logs[0] = ""
        job.pending_at_start = self._pending(job)

    def step(self, job: FakeJob) -> str | None:
        outcome = job.script.outcome
        if outcome == "hang":
            return None
        if outcome == "canceled-remotely":
            return "Canceled"
        if outcome == "no-cuda":
            job.logs = {rank: NO_CUDA_LOG for rank in range(job.ranks)}
            job.error = user_error(2)
            return "Failed"
        if outcome in ("preempt", "fail") and len(job.processed) >= job.script.chunks:
            job.error = PREEMPTION_ERROR if outcome == "preempt" else user_error(1, (
                "RuntimeError: CUDA error: out of memory. "))
            return self._finish(job, "Failed")
        if not self._do_one_chunk(job):
            manifest = self._manifest(job)
            summary = {"chunks": len(manifest.chunks),
                       "chunks_skipped": len(manifest.chunks) - len(job.pending_at_start),
                       "mpi_library_version": "Open MPI v5.0.6 (fake node)"}
            self.datastore.upload_blob(f"{job.output_prefix}/summary.json", json.dumps(summary),
                                       overwrite=True)
            return self._finish(job, "Completed")
        return None

    def _manifest(self, job: FakeJob) -> JobManifest:
        return JobManifest.from_json(
            json.loads(self.datastore.download_blob(f"{job.input_prefix}/job.json").readall())
        )

    def _done(self, job: FakeJob) -> set[str]:
        return {b.name for b in self.datastore.list_blobs(
            name_starts_with=f"{job.output_prefix}/{DONE_DIR}/")}

    def _pending(self, job: FakeJob) -> list[str]:
        done = self._done(job)
        return [c.stem for c in self._manifest(job).chunks
                if f"{job.output_prefix}/{DONE_DIR}/{c.stem}.json" not in done]

    def _finish(self, job: FakeJob, status: str) -> str:
        job.logs[0] = f"processed chunks {job.processed}\nfetching {LEAKY_URL}\n"
        job.logs[1] = "rank 1 had nothing to say\n"
        return status

    def stop(self, job: FakeJob) -> bool:
        return True

    def _do_one_chunk(self, job: FakeJob) -> bool:
        done = self._done(job)
        for chunk in self._manifest(job).chunks:
            report = f"{job.output_prefix}/{DONE_DIR}/{chunk.stem}.json"
            if report in done:
                continue
            data = self.datastore.download_blob(f"{job.input_prefix}/{chunk.file}").readall()
            self.datastore.upload_blob(
                f"{job.output_prefix}/chunks/{chunk.stem}.mkv", data[::-1], overwrite=True
            )
            body = ChunkReport(chunk.index, 0, "node-0", chunk.frames, 0.01, "cuda:0").__dict__
            self.datastore.upload_blob(report, json.dumps(body), overwrite=True)
            job.processed.append(chunk.index)
            return True
        return False


class CommandNode:
    """Runs the submitted command for real, on this machine, in a thread per job.

    It mounts the job's datastore folders (downloads the input and the output written so far),
    binds the ``${{inputs.input}}``/``${{outputs.output}}`` placeholders to them, runs the
    command under ``mpiexec`` with the submitted rank count from the submitted code snapshot,
    and flushes the output folder back. A node has none of the Prefect side's settings.

    Args:
        nodes: Where the mounts go. Not under a test's ``tmp_path``: its name holds the test's,
            and a path saying "preempted" in a job error would read as a preemption.
        cpu_for_gpu: The node's GPU is stood in for by its CPU (``--device cuda`` runs as
            ``--device cpu``); False leaves the job to find no CUDA, as a node whose driver
            does not suit the image's torch.
    """

    def __init__(self, datastore: ContainerClient, nodes: Path, cpu_for_gpu: bool = True) -> None:
        self.storage = BlobJobStorage(datastore)
        self.nodes = nodes
        self.cpu_for_gpu = cpu_for_gpu

    def start(self, job: FakeJob) -> None:
        if job.script.outcome in ("hang", "stuck-queued"):
            return
        job.thread = threading.Thread(target=self._run, args=(job,), daemon=True)
        job.thread.start()

    def step(self, job: FakeJob) -> str | None:
        if job.thread is None or job.thread.is_alive():
            return None
        if job.node_error is not None:  # e.g. a mount that does not exist
            job.error = {"code": "SystemError", "message": job.node_error}
            return "Failed"
        if job.script.outcome == "complete" and job.returncode == 0:
            return "Completed"
        job.error = PREEMPTION_ERROR if job.script.outcome == "preempt" else user_error(
            job.returncode)
        return "Failed"

    def stop(self, job: FakeJob) -> bool:
        if job.process is not None and job.process.poll() is None:
            job.process.terminate()
        return job.thread is None or not job.thread.is_alive()

    def _run(self, job: FakeJob) -> None:
        try:
            self._mount_and_run(job)
        except Exception as exc:  # reported as the job's error, as Azure ML would
            job.node_error = f"{type(exc).__name__}: {exc}"

    def _mount_and_run(self, job: FakeJob) -> None:
        mount = self.nodes / job.name
        inputs, outputs = mount / "input", mount / "output"
        self.storage.download_folder(job.input_prefix, inputs)
        outputs.mkdir(parents=True)
        self.storage.download_folder(job.output_prefix, outputs)
        if (inputs / "job.json").exists():
            job.pending_at_start = [
                c.stem for c in read_manifest(inputs).chunks
                if not (outputs / DONE_DIR / f"{c.stem}.json").exists()
            ]
        command = job.command.replace("${{inputs.input}}", str(inputs)).replace(
            "${{outputs.output}}", str(outputs))
        argv = shlex.split(command)
        assert argv[0] == "python", job.command
        if self.cpu_for_gpu:
            argv = ["cpu" if a == "cuda" and argv[i - 1] == "--device" else a
                    for i, a in enumerate(argv)]
        launcher = [mpiexec_path(), "-n", str(job.ranks), "--oversubscribe"]
        if os.geteuid() == 0:
            launcher.append("--allow-run-as-root")
        argv = [*launcher, sys.executable, *argv[1:]]
        if job.script.outcome in {"preempt", "fail"}:
            argv += ["--fault-rank", "0", "--fault-after-chunks", str(job.script.chunks)]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RESTYLE_", "PREFECT_"))}
        env["OMPI_MCA_osc"] = "^ucx"
        before = _snapshot(outputs)
        job.process = subprocess.Popen(
            argv, cwd=job.code_dir, env=env, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        job.logs[0], _ = job.process.communicate()
        job.returncode = job.process.returncode
        after = _snapshot(outputs)
        job.written = sorted(rel for rel, stamp in after.items() if before.get(rel) != stamp)
        self.storage.upload_folder(outputs, job.output_prefix)


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """(inode, mtime) of every file: a file the job rewrote (atomic rename) changes both."""
    return {
        path.relative_to(folder).as_posix(): (path.stat().st_ino, path.stat().st_mtime_ns)
        for path in folder.rglob("*")
        if path.is_file()
    }


class _Poller:
    """What ``begin_cancel`` returns: an LROPoller that is already done."""

    def result(self, timeout: float | None = None) -> None:
        return None

    def done(self) -> bool:
        return True


class FakeJobs:
    """``MLClient.jobs``."""

    def __init__(self, datastore: ContainerClient, scripts: list[Script], node: Node) -> None:
        self.datastore = datastore
        self.scripts = scripts
        self.node = node
        self.submitted: list[FakeJob] = []
        self.cancelled: list[str] = []
        self.failing_gets: list[Exception] = []  # raised by the next get() calls, in order
        self.refusal: Exception | None = None  # raised by create_or_update
        self.download_error: Exception | None = None  # raised by download

    @staticmethod
    def studio_url(name: str) -> str:
        return f"https://ml.azure.com/runs/{name}?wsid=/subscriptions/sub/workspaces/ws"

    def create_or_update(self, job: Command) -> CommandJob:
        assert isinstance(job, Command)
        if self.refusal:
            raise self.refusal
        entity = job._to_job()
        rest = entity._to_rest_object()  # what the SDK would PUT; fails on a bad entity
        props = rest.properties
        assert props.distribution.distribution_type == "Mpi"
        head = f"azureml://datastores/{DATASTORE}/paths/"
        assert props.inputs["input"].uri.startswith(head), props.inputs["input"].uri
        entity._status = "NotStarted"
        entity.services = {"Studio": JobService(endpoint=self.studio_url(job.name))}
        self.submitted.append(FakeJob(
            entity=entity,
            script=self.scripts.pop(0),
            command=props.command,
            ranks=props.distribution.process_count_per_instance * props.resources.instance_count,
            code_dir=Path(props.code_id),
            input_prefix=props.inputs["input"].uri.removeprefix(head),
            output_prefix=props.outputs["output"].uri.removeprefix(head),
            rest=rest,
        ))
        return entity

    def find(self, name: str) -> FakeJob:
        return next(j for j in self.submitted if j.name == name)

    def get(self, name: str) -> CommandJob:
        if self.failing_gets:
            raise self.failing_gets.pop(0)
        job = self.find(name)
        self._advance(job)
        return job.entity

    def _advance(self, job: FakeJob) -> None:
        if job.status in TERMINAL:
            return
        if job.cancel_requested:
            if self.node.stop(job):
                job.status = "Canceled"
        elif job.status == "NotStarted":
            job.status = "Queued"
        elif job.status == "Queued":
            if job.script.outcome != "stuck-queued":
                job.status = "Running"
                self.node.start(job)
        else:
            ended = self.node.step(job)
            if ended:
                job.status = ended

    def list(self, **kwargs: Any) -> list[CommandJob]:
        return [job.entity for job in reversed(self.submitted)]

    def begin_cancel(self, name: str) -> _Poller:
        self.cancelled.append(name)
        job = self.find(name)
        if job.status not in TERMINAL:
            job.cancel_requested = True
            job.status = "CancelRequested"
            self.node.stop(job)
        return _Poller()

    def stream(self, name: str) -> None:
        job = self.find(name)
        if job.status not in TERMINAL:
            raise AssertionError("jobs.stream on an unfinished job blocks until it ends")
        url = self.studio_url(name)
        sys.stdout.write(f"RunId: {name}\nWeb View: {url}\n\nExecution Summary\n"
                         f"=================\nRunId: {name}\nWeb View: {url}\n\n")
        if job.status == "Failed":
            raise JobException(
                message=f"Exception : \n {json.dumps(job.error, indent=4)} ",
                target=ErrorTarget.JOB,
                no_personal_data_message="Exception raised on failed job.",
                error_category=ErrorCategory.SYSTEM_ERROR,
            )

    def download(
        self, name: str, *, download_path: str | os.PathLike[str] = ".",
        output_name: str | None = None, all: bool = False,  # noqa: A002 - the SDK's name
    ) -> None:
        job = self.find(name)
        if job.status not in TERMINAL:
            raise JobException(
                message=f"This job is in state {job.status}. Download is allowed only in states "
                f"{sorted(TERMINAL)}",
                target=ErrorTarget.JOB,
                no_personal_data_message="download of an unfinished job",
                error_category=ErrorCategory.USER_ERROR,
            )
        if self.download_error:
            raise self.download_error
        root = Path(download_path)
        if output_name is None or all:
            logs = root / "artifacts" / "user_logs"
            logs.mkdir(parents=True, exist_ok=True)
            for rank, text in job.logs.items():
                (logs / f"std_log_process_{rank}.txt").write_text(text)
            system = root / "artifacts" / "system_logs" / "lifecycler"
            system.mkdir(parents=True, exist_ok=True)
            (system / "execution-wrapper.log").write_text(f"job {name} ended {job.status}\n")
        if output_name == "output" or all:
            BlobJobStorage(self.datastore).download_folder(
                job.output_prefix, root / "named-outputs" / "output")


class FakeCompute:
    """``MLClient.compute``: one cluster whose nodes stay up ``idle_polls`` node listings after
    its last job ended, as a cluster waits ``idle_time_before_scale_down``."""

    def __init__(self, jobs: FakeJobs, min_instances: int = 0, idle_polls: int = 2) -> None:
        self.jobs = jobs
        self.min_instances = min_instances
        self.idle_polls = idle_polls

    def get(self, name: str) -> AmlCompute:
        return AmlCompute(name=name, size="Standard_NC24ads_A100_v4",
                          min_instances=self.min_instances, max_instances=4,
                          idle_time_before_scale_down=600, tier="low_priority")

    def list_nodes(self, name: str) -> list[dict[str, str]]:
        if not self.jobs.submitted:
            return []
        if any(job.status not in TERMINAL for job in self.jobs.submitted):
            return [{"node_id": "node-0", "node_state": "running"}]
        if self.idle_polls > 0:
            self.idle_polls -= 1
            return [{"node_id": "node-0", "node_state": "idle"}]
        return []


class FakeMLClient:
    """``MLClient`` as far as the project uses it."""

    def __init__(
        self, datastore: ContainerClient, scripts: list[Script], node: Node | None = None,
        default_datastore: str = "workspaceblobstore",
    ) -> None:
        self.jobs = FakeJobs(datastore, scripts, node or ChunkWriterNode(datastore))
        self.compute = FakeCompute(self.jobs)
        default = type("Datastore", (), {"name": default_datastore})()
        self.datastores = type("Datastores", (), {"get_default": lambda _self: default})()
