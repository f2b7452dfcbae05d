"""Choosing the backend, the Prefect task that runs the GPU job, and the flow hooks that stop it.

Flows call :func:`run_gpu_job` and register :func:`cancel_gpu_jobs` as their
``on_cancellation`` and ``on_crashed`` hooks.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_link_artifact
from prefect.runtime import flow_run

from tasks.compute.base import ComputeBackend, GpuJob, GpuJobResult
from tasks.compute.local import LocalMpiBackend
from tasks.settings import RestyleSettings


def get_backend(
    settings: RestyleSettings, logger: logging.Logger | logging.LoggerAdapter[Any] | None = None
) -> ComputeBackend:
    """The compute backend that ``settings.compute.backend`` names."""
    if settings.compute.backend == "local":
        return LocalMpiBackend(settings.compute, logger)
    if settings.compute.backend == "azureml":
        # Imported here: azure-ai-ml is slow to load and the local backend never needs it.
        from tasks.compute.azureml.backend import AzureMLBackend

        return AzureMLBackend(settings, logger)
    raise ValueError(f"unknown compute backend {settings.compute.backend!r}")


@task(name="run-gpu-job")
def run_gpu_job(
    job: GpuJob, settings: RestyleSettings, total_chunks: int | None = None
) -> GpuJobResult:
    """Run ``job`` on the configured backend; publish its links (the Azure ML Studio page).

    With ``total_chunks`` (stylization) a progress artifact follows the job's chunk reports;
    training has no chunks and reports its steps in the job's log lines instead. The job is
    tagged with the flow run, so :func:`cancel_gpu_jobs` can find it.
    """
    from gpu.jobdir import read_reports
    from tasks.reporting import ProgressReporter

    logger = get_run_logger()
    if job.flow_run_id is None and flow_run.get_id():
        job = dataclasses.replace(job, flow_run_id=str(flow_run.get_id()))
    backend = get_backend(settings, logger)
    on_progress = None
    if total_chunks is not None:
        progress = ProgressReporter(total_chunks, f"{job.name}: chunks stylized")

        def on_progress() -> None:
            progress.update(len(read_reports(job.output_dir)))

    logger.info("dispatching %s to the %s backend (%d ranks)", job.module, backend.name, job.ranks)
    result = backend.run(job, on_progress)
    for name, url in result.links.items():
        create_link_artifact(key=name, link=url, link_text=name)
    logger.info(
        "%s finished in %.1fs after %d attempt(s), reusing %d finished chunk(s)",
        job.module, result.seconds, result.attempts, result.reused_chunks,
    )
    return result


def cancel_gpu_jobs(flow: Any, flow_run: Any, state: Any) -> None:
    """Flow hook (``on_cancellation``, ``on_crashed``): stop the run's GPU jobs.

    On Azure ML, cancels every unfinished job tagged with the flow run, from whichever process
    runs the hook. Locally there is nothing to do: the ranks die with the flow's process
    (:mod:`tasks.compute.orphan_guard`). Never raises: a hook's error would hide the run's.
    """
    logger = logging.getLogger("restyle.compute")
    try:
        settings = RestyleSettings()
        if settings.compute.backend != "azureml":
            return
        from tasks.compute.azureml import client as clients
        from tasks.compute.azureml.backend import cancel_flow_run_jobs

        ml_client = clients.make_ml_client(
            settings.azureml, clients.make_credential(settings.azureml)
        )
        names = cancel_flow_run_jobs(ml_client, str(flow_run.id), logger)
        logger.warning(
            "flow run %s is %s: canceled its Azure ML job(s) %s", flow_run.id,
            getattr(state, "name", state), ", ".join(names) or "(none running)",
        )
    except Exception:
        logger.exception("could not cancel the GPU jobs of flow run %s", flow_run.id)
