"""The ``stylize-video`` flow: one input video in, one stylized MP4 (or an error report) out.

Triggered by a blob-created event (``prefect.yaml``), from the UI's Run form, or with
``prefect deployment run 'stylize-video/default' --param video=<blob> --param style=<name>``.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import PurePosixPath

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from gpu.jobdir import MODEL_NAME, read_reports
from tasks.dispatch import GpuJob, run_gpu_job
from tasks.reporting import RunStats, publish_report
from tasks.settings import RestyleSettings
from tasks.storage import fetch_input, make_blob_store, report_failure, upload_result
from tasks.styles import AUTO_STYLE, StyleChoice, fetch_style_model, validate_style_name
from tasks.video import extract_audio, grab_frames, probe_video, reassemble_video, split_video


@dataclass(frozen=True)
class Target:
    """Where one run reads and writes, derived from the input blob's path.

    ``videos/<style>/<name>.<ext>`` becomes ``stylized/<style>/<name>.mp4``; a blob directly
    under ``videos/`` uses the default style.
    """

    input_container: str
    input_blob: str
    style: str
    output_container: str
    output_blob: str
    error_blob: str


def plan_target(video: str, style: str | None, settings: RestyleSettings) -> Target:
    """Resolve the input blob, the style and the output names for ``video``.

    Raises:
        ValueError: the blob path is empty, absolute or climbs out with ``..``.
    """
    storage = settings.storage
    blob = video.strip().removeprefix(f"{storage.input_container}/")
    path = PurePosixPath(blob)
    if not blob or blob.startswith("/") or ".." in path.parts or not path.suffix:
        raise ValueError(f"not a video blob path: {video!r}")
    folder_style = path.parts[0] if len(path.parts) > 1 else None
    explicit = style if style and style != AUTO_STYLE else None
    chosen = validate_style_name(explicit or folder_style or settings.default_style)
    relative = path.relative_to(folder_style) if folder_style == chosen else path
    stem = str(relative.with_suffix(""))
    return Target(
        input_container=storage.input_container,
        input_blob=blob,
        style=chosen,
        output_container=storage.output_container,
        output_blob=f"{chosen}/{stem}.mp4",
        error_blob=f"{chosen}/{stem}.error.json",
    )


def _run_name() -> str:
    return PurePosixPath(str(flow_run.parameters.get("video", "video"))).name


class StageClock:
    """Seconds spent per named stage, for the stats table."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        started = time.monotonic()
        try:
            yield
        finally:
            self.seconds[name] = time.monotonic() - started


@flow(name="stylize-video", flow_run_name=_run_name, log_prints=True)
def stylize_video(video: str, style: StyleChoice = AUTO_STYLE, etag: str | None = None) -> str:
    """Restyle one video from the input container into the output container.

    Args:
        video: Blob path in the input container, e.g. ``starry_night/clip.mp4``.
        style: Style to apply; ``auto`` takes the blob's folder, else the default style.
        etag: The blob version the triggering event saw (informational; the run processes and
            reports the version it downloads).

    Returns:
        The output blob path, ``stylized/<style>/<name>.mp4``.
    """
    settings = RestyleSettings()
    logger = get_run_logger()
    store = make_blob_store(settings.storage)
    store.ensure_containers([settings.storage.output_container])
    run_id = str(flow_run.get_id() or "local")
    work = settings.work_dir / run_id
    target: Target | None = None
    try:
        target = plan_target(video, style, settings)
        clock = StageClock()
        with clock.stage("fetch"):
            src = work / "source" / PurePosixPath(target.input_blob).name
            version = fetch_input(store, target.input_container, target.input_blob, src)
        if etag and etag.strip('"') != version.etag:
            logger.warning("event saw etag %s; processing the newer version %s", etag,
                           version.etag)
        with clock.stage("probe"):
            probe = probe_video(src, settings.limits)
        with clock.stage("split"):
            audio = extract_audio(src, probe, work / "audio")
            manifest = split_video(src, probe, work / "gpu-in", settings.compute)
            fetch_style_model(target.style, store, settings, work / "gpu-in" / MODEL_NAME)
        with clock.stage("stylize"):
            job = GpuJob(
                module="gpu.stylize",
                input_dir=work / "gpu-in",
                output_dir=work / "gpu-out",
                args=settings.compute.stylize_args(),
                ranks=settings.compute.ranks,
                name=f"stylize {target.input_blob}",
            )
            gpu = run_gpu_job(job, settings, len(manifest.chunks))
        with clock.stage("reassemble"):
            result = reassemble_video(probe, work / "gpu-out", audio, work / "result.mp4")
        with clock.stage("upload"):
            upload_result(store, target.output_container, target.output_blob, result)
        before, after = grab_frames(src, result, work / "frames", probe.video.frame_count // 2)
        stats = RunStats(
            video=target.input_blob, style=target.style, frames=probe.video.frame_count,
            width=probe.video.display_width, height=probe.video.display_height,
            stage_seconds=clock.seconds, reports=read_reports(work / "gpu-out"),
            backend=gpu.backend, gpu_attempts=gpu.attempts, retry_reasons=gpu.retry_reasons,
        )
        url = store.url(target.output_container, target.output_blob)
        publish_report(stats, before, after, url)
        store.delete(target.output_container, target.error_blob)  # an older version's failure
        shutil.rmtree(work, ignore_errors=True)
        return f"{target.output_container}/{target.output_blob}"
    except Exception as exc:
        style_folder = target.style if target else settings.default_style
        name = PurePosixPath(video).stem or "input"
        error_blob = target.error_blob if target else f"{style_folder}/{name}.error.json"
        if target:  # a result of an older version no longer matches the input
            store.delete(target.output_container, target.output_blob)
        report_failure(
            store,
            (settings.storage.output_container, error_blob),
            (settings.storage.input_container,
             target.input_blob if target else video.removeprefix(
                 f"{settings.storage.input_container}/")),
            exc,
            run_id,
            {"video": video},
        )
        shutil.rmtree(work, ignore_errors=True)
        raise
