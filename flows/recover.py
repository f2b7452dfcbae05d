"""The ``recover-crashed-run`` flow: a crashed restyle run gets its report, cleanup and one retry.

Triggered by every ``prefect.flow-run.Crashed`` event of ``stylize-video`` and ``train-style``
(``prefect.yaml``); see :mod:`tasks.recovery` for what it does and why.
"""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.runtime import flow_run
from prefect.states import Completed, State

from tasks.failures import report_run_failure
from tasks.recovery import (
    CrashedFlowRun,
    collect_work_folders,
    crashed_run_id,
    plan_recovery,
    read_crashed_run,
    read_log_tail,
    retry_crashed_run,
)
from tasks.run_context import RunContext, WorkDir, current_run_id, run_context


def _run_name() -> str:
    return f"recover {str(flow_run.parameters.get('crashed_run', ''))[-36:][:8]}"


@task(name="report-crash", retries=2, retry_delay_seconds=2)
def report_crash(ctx: RunContext, run: CrashedFlowRun, log_tail: str, retry: str
                 ) -> str | None:
    """The crashed run's failure report, as its own failure hook would have written it."""
    where = report_run_failure(
        run.flow_name, run.parameters, run.id, f"CrashedRun: {run.message or 'no message'}",
        log_tail, ctx.settings, ctx.store, extra={"retry": retry}, log=get_run_logger(),
    )
    return where.label if where else None


@flow(name="recover-crashed-run", flow_run_name=_run_name, log_prints=True)
def recover_crashed_run(crashed_run: str) -> State:
    """Report, clean up and retry once a crashed run of a restyle flow.

    Args:
        crashed_run: The crashed flow run's id, or its event resource id
            (``prefect.flow-run.<id>``).
    """
    ctx = run_context(current_run_id())
    run = read_crashed_run(crashed_run_id(crashed_run))
    plan = plan_recovery(run)
    if not plan.recover:
        return Completed(message=f"nothing to recover: {plan.reason}")
    report = report_crash(ctx, run, read_log_tail(run.id), plan.reason)
    WorkDir.of_run(ctx.settings.work_dir, run.id).remove()
    collect_work_folders(ctx.settings.work_dir)
    retry = retry_crashed_run(run) if plan.retry else None
    return Completed(message=f"{run.name!r}: report {report or 'not written (superseded)'}; "
                             f"{plan.reason}" + (f" as flow run {retry}" if retry else ""))
