"""The ``train-style`` flow: one style image in, one registered style model (or an error) out.

Triggered by a blob-created event in the styles container (``prefect.yaml``), from the UI's Run
form, or with ``prefect deployment run 'train-style/default' --param style_image=<blob>``.
``styles/<name>.<jpg|png|webp>`` becomes ``models/<name>.safetensors`` (plus ``<name>.json``
with the metrics and training settings), and ``<name>`` becomes a choice of ``stylize-video``'s
``style`` parameter without a redeploy. A failure writes ``models/<name>.error.json`` (through
the state hooks of :mod:`tasks.failures`). The weights record the style image's version, so a
run for a version already trained ends at once ("already done").

The network is strength-conditioned unless ``RESTYLE_TRAINING__CONDITIONED=false``, so
``strength``, ``stroke_scale`` and ``preserve_colors`` work for it as for a shipped style. Its
weights carry the strength it paints at when a run asks for none
(``RESTYLE_TRAINING__DEFAULT_STRENGTH``; unset, gpu.train's 0.5 for new styles).
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.runtime import flow_run
from prefect.states import State

from gpu.model import read_metadata
from tasks.compute.base import GpuJob
from tasks.compute.run import run_gpu_job
from tasks.failures import FLOW_HOOKS
from tasks.naming import short_label
from tasks.outputs import (
    SourceStamp,
    already_done,
    already_done_state,
    check_source,
    fetch_input,
    still_current,
    superseded_now,
)
from tasks.run_context import current_run_id, run_context
from tasks.styles import registered_style_names, shipped_style_names
from tasks.targets import plan_training
from tasks.training import (
    STYLIZE_DEPLOYMENT,
    check_style_image,
    metrics_rows,
    prepare_training_input,
    read_training_output,
    refresh_style_choices,
    register_trained_style,
    training_args,
)


def _run_name() -> str:
    return short_label(str(flow_run.parameters.get("style_image") or "style"))


@flow(name="train-style", flow_run_name=_run_name, log_prints=True, **FLOW_HOOKS)
def train_style(
    style_image: str, name: str | None = None, steps: int | None = None, etag: str | None = None
) -> str | State:
    """Train a style network on one image from the styles container and register it.

    Args:
        style_image: Blob path in the styles container, e.g. ``the_wave.jpg``.
        name: Style name to register; default: the image's file name without its extension.
        steps: Training steps; default: the ``training.steps`` setting
            (``RESTYLE_TRAINING__STEPS``, 1500, about 75 s on one H200).
        etag: The blob version the triggering event saw; if the image has changed since, this
            run is superseded and leaves the work to the newer version's run.

    Returns:
        The registered model's blob path, ``models/<name>.safetensors``.
    """
    ctx = run_context(current_run_id())
    settings, store, work = ctx.settings, ctx.store, ctx.work
    target = plan_training(style_image, name, settings)
    args = training_args(settings.training, target.name, settings.compute.device, steps)
    source = check_source(store, target.source, etag)
    if source is None:
        return superseded_now(store, target.source)
    if steps is None and already_done(store, target.weights, source):
        return already_done_state(target.weights, source)
    work.write_record({"source": target.source.label, "source_etag": source.etag,
                       "output": target.weights.label})
    clock: dict[str, float] = {}
    started = time.monotonic()
    src = work.source(target.source.blob)
    if not fetch_input(store, source, src):
        return superseded_now(store, target.source)
    width, height = check_style_image(src, target.source.label)
    content_count = prepare_training_input(src, settings.training.content_dir, work.gpu_in)
    clock["prepare"] = time.monotonic() - started
    started = time.monotonic()
    job = GpuJob(module="gpu.train", input_dir=work.gpu_in, output_dir=work.gpu_out, args=args,
                 ranks=settings.compute.ranks, name=f"train {target.name}")
    gpu = run_gpu_job(job, settings)
    clock["train job"] = time.monotonic() - started
    weights, metrics = read_training_output(work.gpu_out)
    metadata = read_metadata(weights)
    if not still_current(store, source):
        return superseded_now(store, target.source)
    info = {
        "name": target.name,
        "style_image": target.source.label,
        "style_image_etag": source.etag,
        "style_image_size": [width, height],
        "content_images": content_count,
        "metrics": metrics,
        "default_strength": float(metadata["default_strength"]),
        "training": json.loads(metadata.get("training", "{}")),
        "backend": gpu.backend,
        "flow_run_id": ctx.run_id,
        "time": datetime.now(UTC).isoformat(),
    }
    stamp = SourceStamp(target.source, source.etag).metadata(target.name, ctx.run_id)
    model_blob = register_trained_style(store, settings, target.name, weights, info, stamp)
    # The style is registered and usable; the dropdown and the table only decorate.
    choices = refresh_style_choices(
        [*shipped_style_names(), *registered_style_names(store, settings)], return_state=True)
    if not choices.is_completed():
        get_run_logger().warning("style %r is registered, but %s's dropdown was not updated; "
                                 "the next deploy lists it", target.name, STYLIZE_DEPLOYMENT)
    create_table_artifact(
        table=metrics_rows(target.name, target.source.label, model_blob, metrics, clock),
        key="train-style-metrics",
        description=f"Training of style {target.name!r} from {target.source.label}",
    )
    return model_blob

