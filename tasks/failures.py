"""Failure reports, and the state hooks that write them and clear a run's work folder.

A failed run of either flow writes one ``.error.json`` report beside where its result would
have gone (``tasks.naming``), tags its input ``restyle-status=failed`` and ends Failed with the
same reason. The report holds the reason, the end of the GPU job's log (or, for a crashed run,
of the run's own log), the flow run id, the time and the run's parameters. A run whose input
has a newer version writes no report: the newer version's run owns that name. A result is never
taken back once delivered: a failure after the commit leaves it in place and writes no report.

The flows register :data:`FLOW_HOOKS`; the crash recovery
(``flows/recover.py``) calls :func:`report_run_failure` for runs whose process died before any
hook could run. Everything is resolved again from the run's parameters and its work folder's
record, so the same report comes out whichever of them writes it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from prefect.logging.loggers import flow_run_logger

from tasks.compute.run import cancel_gpu_jobs
from tasks.naming import BlobRef, rejected_report_name
from tasks.outputs import already_done, remove_stale_output, version_or_none
from tasks.run_context import WorkDir, run_context
from tasks.settings import RestyleSettings
from tasks.storage import BlobNotFoundError, BlobStore
from tasks.targets import plan_stylize, plan_training

LOG_TAIL_CHARS = 4000
STYLIZE_FLOW = "stylize-video"
TRAINING_FLOW = "train-style"

logger = logging.getLogger("restyle.failures")


@dataclass(frozen=True)
class FailureTarget:
    """Where a failed run's report goes and which input blob it is about.

    ``source`` is ``None`` when the run's parameters name no acceptable blob (the report then
    goes to the ``_rejected/`` folder); ``output`` is the result a failure may find stale.
    """

    error: BlobRef
    source: BlobRef | None
    output: BlobRef | None = None
    context: dict[str, Any] = field(default_factory=dict)


def stylize_failure_target(parameters: Mapping[str, Any], settings: RestyleSettings
                           ) -> FailureTarget:
    """The report target of a ``stylize-video`` run with these parameters."""
    video = str(parameters.get("video") or "")
    context = {"video": video, "style": parameters.get("style")}
    try:
        target = plan_stylize(video, parameters.get("style"), settings)
    except ValueError:
        rejected = BlobRef(settings.storage.output_container, rejected_report_name(video))
        return FailureTarget(error=rejected, source=None, context=context)
    return FailureTarget(error=target.error, source=target.source, output=target.output,
                         context={**context, "style": target.style})


def training_failure_target(parameters: Mapping[str, Any], settings: RestyleSettings
                            ) -> FailureTarget:
    """The report target of a ``train-style`` run with these parameters."""
    image = str(parameters.get("style_image") or "")
    context = {"style_image": image, "name": parameters.get("name")}
    try:
        target = plan_training(image, parameters.get("name"), settings)
    except ValueError:
        rejected = BlobRef(settings.storage.models_container, rejected_report_name(image))
        return FailureTarget(error=rejected, source=None, context=context)
    return FailureTarget(error=target.error, source=target.source,
                         context={**context, "name": target.name})


FAILURE_TARGETS: dict[str, Callable[[Mapping[str, Any], RestyleSettings], FailureTarget]] = {
    STYLIZE_FLOW: stylize_failure_target,
    TRAINING_FLOW: training_failure_target,
}


def failure_report(reason: str, flow_run_id: str, context: Mapping[str, Any],
                   log_tail: str = "", source_etag: str | None = None) -> dict[str, Any]:
    """The ``.error.json`` document (pure)."""
    report = {**context, "reason": reason, "flow_run_id": flow_run_id,
              "time": datetime.now(UTC).isoformat()}
    if source_etag:
        report["source_etag"] = source_etag
    if log_tail:
        report["log_tail"] = log_tail[-LOG_TAIL_CHARS:]
    return report


Logger = logging.Logger | logging.LoggerAdapter[Any]


def write_failure_report(store: BlobStore, target: FailureTarget, report: dict[str, Any],
                         log: Logger = logger) -> bool:
    """Write ``report`` and tag the input failed, unless the input has a newer version or
    this version's result was delivered before the failure.

    Returns:
        Whether the report was written.
    """
    run_etag = report.get("source_etag")
    if target.source is not None and run_etag:
        current = version_or_none(store, target.source)
        if current is not None and current.etag != run_etag:
            log.warning("no error report for %r: superseded by version %s",
                        target.source.label, current.etag)
            return False
        if target.output is not None and current is not None and already_done(
                store, target.output, current):
            log.warning("no error report: %r, this version's result, was delivered before "
                        "the failure", target.output.label)
            return False
        if target.output is not None and remove_stale_output(
                store, target.output, target.source, run_etag):
            log.warning("removed %r: it showed an older version of the input",
                        target.output.label)
    store.upload_json(target.error.container, target.error.blob, report)
    if target.source is not None:
        try:
            store.set_tags(target.source.container, target.source.blob,
                           {"restyle-status": "failed"})
        except BlobNotFoundError:
            pass  # a missing input cannot be tagged; the report already says it is missing
        except Exception as error:  # a courtesy tag must never replace the failure's reason
            log.warning("could not tag %r as failed: %s: %s", target.source.label,
                        type(error).__name__, error)
    return True


def report_run_failure(flow_name: str, parameters: Mapping[str, Any], flow_run_id: str,
                       reason: str, log_tail: str, settings: RestyleSettings, store: BlobStore,
                       extra: Mapping[str, Any] | None = None, log: Logger = logger
                       ) -> BlobRef | None:
    """Write the failure report of run ``flow_run_id`` of ``flow_name``.

    Returns:
        The report's blob, or ``None`` if none was written (superseded, or not a restyle flow).
    """
    make_target = FAILURE_TARGETS.get(flow_name)
    if make_target is None:
        return None
    target = make_target(parameters, settings)
    record = WorkDir.of_run(settings.work_dir, flow_run_id).read_record()
    report = failure_report(reason, flow_run_id, {**target.context, **(extra or {})},
                            log_tail, record.get("source_etag"))
    return target.error if write_failure_report(store, target, report, log) else None


def state_reason(state: Any) -> tuple[str, str]:
    """``(reason, log tail)`` of a final state: the exception's type and message, else the
    state's message."""
    error = None
    with contextlib.suppress(Exception):  # a crashed state may hold no readable result
        error = state.result(raise_on_failure=False)
    if isinstance(error, BaseException):
        return f"{type(error).__name__}: {error}", str(getattr(error, "log_tail", "") or "")
    return f"{state.name}: {state.message or 'no message'}", ""


# --- state hooks ----------------------------------------------------------------------------


def _report_and_clean(flow: Any, flow_run: Any, state: Any) -> None:
    """``on_failure`` / ``on_crashed``: the report, then the work folder. Never raises: an
    error here would hide the run's own."""
    log = flow_run_logger(flow_run, flow)
    ctx = run_context(str(flow_run.id))
    try:
        reason, tail = state_reason(state)
        where = report_run_failure(flow.name, flow_run.parameters, ctx.run_id, reason, tail,
                                   ctx.settings, ctx.store, log=log)
        if where is not None:
            log.error("failed: %s (report: %r)", reason, where.label)
    except Exception:
        log.exception("could not write the failure report of flow run %s", ctx.run_id)
    finally:
        ctx.work.remove()


def _clean(flow: Any, flow_run: Any, state: Any) -> None:
    """``on_completion`` / ``on_cancellation``: only the work folder goes."""
    run_context(str(flow_run.id)).work.remove()


FLOW_HOOKS: dict[str, list[Callable[[Any, Any, Any], None]]] = {
    "on_failure": [_report_and_clean],
    "on_crashed": [_report_and_clean, cancel_gpu_jobs],
    "on_completion": [_clean],
    "on_cancellation": [_clean, cancel_gpu_jobs],
}
"""Keyword arguments of ``@flow`` for both flows."""
