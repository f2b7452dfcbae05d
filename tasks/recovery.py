"""Crash recovery: what the ``recover-crashed-run`` flow does for a run whose process died.

A flow run whose process is killed runs no hooks. It becomes Crashed either at once (its worker
saw the process die) or when its heartbeats stop (the automation of
``deployments/post_deploy.py``). Each Crashed run of a restyle flow triggers
``recover-crashed-run`` (``prefect.yaml``), which writes the same failure report as any failure
(with the end of the crashed run's log), removes its work folder and the folders of other
finished runs, and starts the run again once: the retry carries the tag :data:`CRASH_RETRY_TAG`,
and a crashed retry is not retried again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

from prefect import get_run_logger, task
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterId,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.client.schemas.sorting import LogSort
from prefect.deployments import run_deployment

from tasks.failures import FAILURE_TARGETS
from tasks.run_context import collect_work_dirs

CRASH_RETRY_TAG = "crash-retry"
LOG_TAIL_LINES = 40
PAGE = 200
"""Flow runs per API read: the server's default page limit."""


@dataclass(frozen=True)
class CrashedFlowRun:
    """What recovery needs to know of a crashed flow run."""

    id: str
    name: str
    flow_name: str
    state_type: str
    message: str
    deployment_id: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class RecoveryPlan:
    """Whether to recover the run at all, whether to retry it, and why, in words."""

    recover: bool
    retry: bool
    reason: str


def plan_recovery(run: CrashedFlowRun) -> RecoveryPlan:
    """Recover Crashed runs of restyle's flows; retry those that are not retries themselves."""
    if run.state_type != "CRASHED":
        return RecoveryPlan(False, False, f"run {run.name!r} is {run.state_type}, not crashed")
    if run.flow_name not in FAILURE_TARGETS:
        return RecoveryPlan(False, False, f"{run.flow_name!r} is not a restyle flow")
    if CRASH_RETRY_TAG in run.tags:
        return RecoveryPlan(True, False, "not retried: it was already the automatic retry")
    if run.deployment_id is None:
        return RecoveryPlan(True, False, "not retried: it has no deployment to run again")
    return RecoveryPlan(True, True, "retried once, automatically")


def crashed_run_id(resource_id: str) -> str:
    """The flow run id in ``prefect.flow-run.<id>`` (an event's resource) or a bare id."""
    return str(UUID(resource_id.removeprefix("prefect.flow-run.")))


@task(name="read-crashed-run", retries=2, retry_delay_seconds=2)
def read_crashed_run(flow_run_id: str) -> CrashedFlowRun:
    """The crashed run, its flow's name and its final state."""
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(UUID(flow_run_id))
        flow = client.read_flow(run.flow_id)
    state = run.state
    get_run_logger().info("flow run %r of %s is %s", run.name, flow.name,
                          state.type.value if state else "without a state")
    return CrashedFlowRun(
        id=str(run.id), name=run.name, flow_name=flow.name,
        state_type=state.type.value if state else "",
        message=(state.message or "") if state else "",
        deployment_id=str(run.deployment_id) if run.deployment_id else None,
        parameters=dict(run.parameters), tags=tuple(run.tags),
    )


@task(name="read-log-tail", retries=2, retry_delay_seconds=2)
def read_log_tail(flow_run_id: str, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` log lines of a flow run, oldest first."""
    with get_client(sync_client=True) as client:
        logs = client.read_logs(
            LogFilter(flow_run_id=LogFilterFlowRunId(any_=[UUID(flow_run_id)])),
            limit=lines, sort=LogSort.TIMESTAMP_DESC,
        )
    return "\n".join(log.message for log in reversed(logs))


@task(name="retry-crashed-run", retries=2, retry_delay_seconds=2)
def retry_crashed_run(run: CrashedFlowRun) -> str:
    """Start the crashed run's deployment again with its parameters; returns the new run's id.

    The idempotency key makes a second recovery of the same crash return the same retry.
    """
    assert run.deployment_id is not None
    retry = run_deployment(
        UUID(run.deployment_id), parameters=run.parameters, timeout=0, as_subflow=False,
        tags=[*run.tags, CRASH_RETRY_TAG], idempotency_key=f"{CRASH_RETRY_TAG}-{run.id}",
    )
    get_run_logger().info("started %r again as flow run %s", run.name, retry.id)
    return str(retry.id)


@task(name="collect-work-folders")
def collect_work_folders(work_root: Path) -> list[str]:
    """Remove the work folders of runs that reached a final state (never a running one's)."""
    folders = [p.name for p in work_root.iterdir()] if work_root.is_dir() else []
    ids = []
    for name in folders:
        try:
            ids.append(UUID(name))
        except ValueError:
            continue
    if not ids:
        return []
    finished: set[str] = set()
    with get_client(sync_client=True) as client:
        for start in range(0, len(ids), PAGE):
            page = ids[start:start + PAGE]
            runs = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=page)), limit=len(page))
            finished |= {str(r.id) for r in runs if r.state is not None and r.state.is_final()}
    removed = collect_work_dirs(work_root, finished.__contains__)
    if removed:
        get_run_logger().info("removed the work folders of finished runs %s", ", ".join(removed))
    return removed
