"""The ``stylize-video`` flow: one input video in, one stylized MP4 (or an error report) out.

Triggered by a blob-created event (``prefect.yaml``), from the UI's Run form, or with
``prefect deployment run 'stylize-video/default' --param video=<blob> --param style=<name>``.

``videos/<path>`` in style ``<style>`` becomes ``stylized/<path>.<style>.mp4`` (naming:
:mod:`tasks.naming`). The result records the input version it was made from; a run for a
version that already has its result ends at once ("already done"), and a run whose input got a
newer version meanwhile ends without writing ("superseded by <etag>"), both Completed
(:mod:`tasks.outputs`). Failures go through the state hooks of :mod:`tasks.failures`.

Painting controls: ``strength``, ``stroke_scale`` and ``preserve_colors`` come from the run's
parameters, else from the input blob's metadata, else from the settings, and strength at last
from the style's own default (:mod:`tasks.controls`). An upload chooses its own painting with
metadata keys ``restyle_strength`` (0 to 1), ``restyle_stroke_scale`` (0.25 to 4) and
``restyle_preserve_colors`` (true/false, 1/0, yes/no), e.g.
``az storage blob upload ... --metadata restyle_strength=0.3 restyle_preserve_colors=true`` or
``upload_blob(data, metadata={"restyle_strength": "0.3"})``. A bad value or an unknown
``restyle_*`` key fails the run with an error report naming it; the input is left as it is.
The result records the values it was painted with under the same keys, and a run asking for
other values than the result's paints the same input version again.
"""

from __future__ import annotations

from typing import Annotated

from prefect import flow, get_run_logger
from prefect.runtime import flow_run
from prefect.states import State
from pydantic import Field

from gpu.jobdir import MODEL_NAME, read_reports
from tasks.compute.base import GpuJob
from tasks.compute.run import run_gpu_job
from tasks.controls import STRENGTH_RANGE, STROKE_SCALE_RANGE, ControlRequest, choose_controls
from tasks.failures import FLOW_HOOKS
from tasks.naming import short_label
from tasks.outputs import (
    RESULT_KEYS,
    SourceStamp,
    already_done,
    already_done_state,
    check_source,
    commit_result,
    fetch_input,
    superseded_now,
    superseded_state,
)
from tasks.reporting import RunStats, StageClock, publish_report
from tasks.run_context import current_run_id, run_context
from tasks.styles import AUTO_STYLE, StyleChoice, fetch_style_model, require_style
from tasks.targets import plan_stylize
from tasks.video import extract_audio, grab_frames, probe_video, reassemble_video, split_video


def _run_name() -> str:
    return short_label(str(flow_run.parameters.get("video") or "video"))


@flow(name="stylize-video", flow_run_name=_run_name, log_prints=True, **FLOW_HOOKS)
def stylize_video(
    video: str,
    style: StyleChoice = AUTO_STYLE,
    etag: str | None = None,
    strength: Annotated[float | None, Field(ge=STRENGTH_RANGE[0], le=STRENGTH_RANGE[1])] = None,
    stroke_scale: Annotated[float | None,
                            Field(ge=STROKE_SCALE_RANGE[0], le=STROKE_SCALE_RANGE[1])] = None,
    preserve_colors: bool | None = None,
) -> str | State:
    """Restyle one video from the input container into the output container.

    Args:
        video: Blob path in the input container, e.g. ``starry_night/clip.mp4`` (a leading
            ``videos/`` names the container).
        style: Style to apply; ``auto`` takes the blob's folder, else the default style.
        etag: The blob version the triggering event saw; if the input has changed since, this
            run is superseded and leaves the work to the newer version's run.
        strength: 0 (near the input) to 1 (the full style); unset: the blob's
            ``restyle_strength``, else the setting, else the style's own default.
        stroke_scale: Brush size, 0.25 to 4; unset: the blob's ``restyle_stroke_scale``,
            else the setting (1).
        preserve_colors: Keep the video's colours; unset: the blob's
            ``restyle_preserve_colors``, else the setting.

    Returns:
        The result's blob path, ``stylized/<path>.<style>.mp4``.
    """
    ctx = run_context(current_run_id())
    settings, store, work = ctx.settings, ctx.store, ctx.work
    target = plan_stylize(video, style, settings)
    require_style(target.style, store, settings)
    source = check_source(store, target.source, etag)
    if source is None:
        return superseded_now(store, target.source)
    # Noted first, so that a failure from here on is reported against this version.
    work.write_record({"source": target.source.label, "source_etag": source.etag,
                       "output": target.output.label, "style": target.style})
    model = fetch_style_model(target.style, store, settings, work.gpu_in / MODEL_NAME)
    controls = choose_controls(ControlRequest(strength, stroke_scale, preserve_colors), source,
                               settings.compute, model, ignore=RESULT_KEYS)
    if already_done(store, target.output, source, controls):
        return already_done_state(target.output, source)
    clock = StageClock()
    with clock.stage("fetch"):
        src = work.source(target.source.blob)
        if not fetch_input(store, source, src):
            return superseded_now(store, target.source)
    with clock.stage("probe"):
        probe = probe_video(src, settings.limits, target.source.label)
    with clock.stage("split"):
        audio = extract_audio(src, probe, work.audio)
        manifest = split_video(src, probe, work.gpu_in, settings.compute)
    with clock.stage("stylize"):
        job = GpuJob(module="gpu.stylize", input_dir=work.gpu_in, output_dir=work.gpu_out,
                     args=controls.apply(settings.compute).stylize_args(),
                     ranks=settings.compute.ranks,
                     name=f"stylize {target.source.label}")
        gpu = run_gpu_job(job, settings, len(manifest.chunks))
    with clock.stage("reassemble"):
        result = reassemble_video(probe, work.gpu_out, audio, work.result)
    with clock.stage("upload"):
        outcome = commit_result(store, target.output, result,
                                SourceStamp(target.source, source.etag), target.style, ctx.run_id,
                                controls)
    if not outcome.committed:
        return superseded_state(target.source, outcome.superseded_by)
    store.delete(target.error.container, target.error.blob)  # an older version's failure
    # The result is delivered: what follows only decorates the run page, so a failure there is
    # logged and the run still completes with its result.
    stats = RunStats(
        video=target.source.blob, style=target.style, frames=probe.video.frame_count,
        width=probe.video.display_width, height=probe.video.display_height,
        stage_seconds=clock.seconds, reports=read_reports(work.gpu_out),
        controls=controls, **RunStats.gpu_facts(gpu),
    )
    frames = grab_frames(src, result, work.frames, probe.video.frame_count // 2,
                         return_state=True)
    report = publish_report(stats, frames.result() if frames.is_completed() else None,
                            store.share_url(target.output.container, target.output.blob,
                                            settings.storage.link_minutes),
                            return_state=True)
    if not (frames.is_completed() and report.is_completed()):
        get_run_logger().warning("the result is delivered, but the run page's pictures or "
                                 "table could not be made (see the tasks above)")
    return target.output.label
