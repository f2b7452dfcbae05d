"""The ``train-style`` flow: one style image in, one registered style model (or an error) out.

Triggered by a blob-created event in the styles container (``prefect.yaml``), from the UI's Run
form, or with ``prefect deployment run 'train-style/default' --param style_image=<blob>``.
``styles/<name>.<jpg|png|webp>`` becomes ``models/<name>.safetensors`` (plus ``<name>.json``
with the metrics and training settings), and ``<name>`` becomes a choice of ``stylize-video``'s
``style`` parameter without a redeploy. A failure writes ``models/<name>.error.json``.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import DeploymentUpdate
from prefect.exceptions import ObjectNotFound
from prefect.runtime import flow_run

from gpu.model import read_metadata
from gpu.train import METRICS_NAME, WEIGHTS_NAME
from gpu.train_data import IMAGE_SUFFIXES, ImageError, load_style_image
from tasks.dispatch import GpuJob, run_gpu_job
from tasks.settings import RestyleSettings, TrainingSettings
from tasks.storage import BlobStore, fetch_input, make_blob_store, report_failure
from tasks.styles import (
    check_trainable_name,
    register_style,
    registered_style_names,
    shipped_style_names,
)

STYLIZE_DEPLOYMENT = "stylize-video/default"
"""The deployment whose ``style`` dropdown lists the styles (flows/stylize.py)."""
CONTENT_HELP = (
    "build it with `python tools/assemble_content.py` or point RESTYLE_TRAINING__CONTENT_DIR "
    "at a folder of content images"
)


@dataclass(frozen=True)
class TrainingTarget:
    """Which blob one run trains on and the name the style is registered under."""

    styles_container: str
    style_blob: str
    name: str

    @property
    def label(self) -> str:
        """``container/blob``, as users name the upload in messages."""
        return f"{self.styles_container}/{self.style_blob}"


def plan_training(style_image: str, name: str | None, settings: RestyleSettings) -> TrainingTarget:
    """Resolve the style blob and the style name (default: the blob's stem).

    Raises:
        ValueError: the blob path is empty, absolute or climbs out with ``..``.
        ImageError: the blob's extension is not one of a style image.
        UnknownStyleError: the name is not a valid style name.
        ShippedStyleError: the name is a shipped style's.
    """
    container = settings.storage.styles_container
    blob = style_image.strip().removeprefix(f"{container}/")
    path = PurePosixPath(blob)
    if not blob or blob.startswith("/") or ".." in path.parts:
        raise ValueError(f"not a style image blob path: {style_image!r}")
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise ImageError(f"{container}/{blob}: a style image must be a "
                         f"{'/'.join(IMAGE_SUFFIXES)} file")
    chosen = check_trainable_name(name or path.stem, shipped_style_names())
    return TrainingTarget(styles_container=container, style_blob=blob, name=chosen)


def training_args(
    training: TrainingSettings, name: str, device: str, steps: int | None = None
) -> tuple[str, ...]:
    """The ``gpu.train`` arguments after ``--input``/``--output`` (pure; tested as a tuple).

    Raises:
        ValueError: ``steps`` is given and below 1.
    """
    if steps is not None and steps < 1:
        raise ValueError(f"steps must be at least 1, not {steps}")
    args = (
        "--style-name", name,
        "--steps", str(steps or training.steps),
        "--batch-size", str(training.batch_size),
        "--image-size", str(training.image_size),
        "--content-size", str(training.content_size),
        "--style-size", str(training.style_size),
        "--arch", training.arch,
        "--model-hparams", json.dumps(training.model_hparams),
        "--style-weight", str(training.style_weight),
        "--device", device,
    )
    if training.max_seconds is not None:
        args += ("--max-seconds", str(training.max_seconds))
    return args


def with_style_choices(schema: dict[str, Any], names: list[str]) -> dict[str, Any] | None:
    """``schema`` with ``names`` added to its ``style`` enum, or ``None`` if nothing is missing.

    Names already offered keep their order; missing ones are appended.
    """
    style = schema.get("properties", {}).get("style")
    if not style or "enum" not in style:
        return None
    missing = [name for name in names if name not in style["enum"]]
    if not missing:
        return None
    updated = json.loads(json.dumps(schema))  # a deep copy; the caller's schema stays as read
    updated["properties"]["style"]["enum"] = [*style["enum"], *missing]
    return updated


def _link_or_copy(src: Path, dest: Path) -> None:
    # A hard link costs nothing locally; a real file (not a symlink) is what an Azure ML
    # upload of the input folder reads. Copy when the work dir is on another file system.
    try:
        os.link(src, dest)
    except OSError:
        shutil.copyfile(src, dest)


def _run_name() -> str:
    return PurePosixPath(str(flow_run.parameters.get("style_image", "style"))).name


def style_image_size(path: Path, label: str) -> tuple[int, int]:
    """Decode the style image with ``gpu.train``'s own checks; returns (width, height).

    Raises:
        ImageError: not an image, smaller than 64 px on a side or over 40 megapixels; the
            message names the blob (``label``), not the local copy.
    """
    try:
        height, width = load_style_image(path).shape[:2]
    except ImageError as err:
        raise ImageError(str(err).replace(str(path), label)) from None
    return width, height


# --- Prefect tasks --------------------------------------------------------------------------


@task(name="check-style-image")
def check_style_image(path: Path, label: str) -> tuple[int, int]:
    """Reject an unusable style image before any training is set up (see style_image_size)."""
    width, height = style_image_size(path, label)
    get_run_logger().info("%s: %dx%d style image", label, width, height)
    return width, height


@task(name="prepare-training-input")
def prepare_training_input(style: Path, content: Path, input_dir: Path) -> int:
    """Lay out ``gpu.train``'s input folder: ``style.<ext>`` and the content set.

    Returns:
        How many content images (or 1 for a packed tensor file) the folder holds.

    Raises:
        FileNotFoundError: no content set at ``content``, or no images in it.
    """
    if not content.exists():
        raise FileNotFoundError(f"no training content set at {content}: {CONTENT_HELP}")
    shutil.rmtree(input_dir, ignore_errors=True)  # a retried run starts from a clean folder
    input_dir.mkdir(parents=True)
    shutil.copyfile(style, input_dir / f"style{style.suffix.lower()}")
    if content.is_file():
        if content.suffix not in (".pt", ".npy"):
            raise FileNotFoundError(f"{content}: a content set is an image folder or a .pt/.npy "
                                    f"file; {CONTENT_HELP}")
        _link_or_copy(content, input_dir / f"content{content.suffix}")
        return 1
    images = sorted(p for p in content.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise FileNotFoundError(f"no content images in {content}: {CONTENT_HELP}")
    (input_dir / "content").mkdir()
    for image in images:
        _link_or_copy(image, input_dir / "content" / image.name)
    return len(images)


@task(name="register-style", retries=2, retry_delay_seconds=2)
def register_trained_style(
    store: BlobStore, settings: RestyleSettings, name: str, weights: Path, info: dict[str, Any]
) -> str:
    """Upload the weights and their description; returns the weights' blob path."""
    register_style(store, settings, name, weights, info)
    get_run_logger().info("registered style %r (%d bytes)", name, weights.stat().st_size)
    return f"{settings.storage.models_container}/{name}.safetensors"


@task(name="refresh-style-choices", retries=2, retry_delay_seconds=2)
def refresh_style_choices(names: list[str], deployment: str = STYLIZE_DEPLOYMENT) -> bool:
    """Offer ``names`` in ``deployment``'s ``style`` dropdown without redeploying it.

    ``names`` is the whole registry (shipped and registered), not just the new style, so a
    choice lost to two trainings patching at once is restored by the next one.

    Returns:
        Whether the deployment's parameter schema was changed.
    """
    logger = get_run_logger()
    with get_client(sync_client=True) as client:
        try:
            current = client.read_deployment_by_name(deployment)
        except ObjectNotFound:
            logger.warning("deployment %s not found; no style dropdown to update", deployment)
            return False
        schema = with_style_choices(current.parameter_openapi_schema or {}, names)
        if schema is None:
            return False
        client.update_deployment(current.id, DeploymentUpdate(parameter_openapi_schema=schema))
    logger.info("%s now offers styles %s", deployment, schema["properties"]["style"]["enum"])
    return True


def metrics_rows(name: str, source: str, model_blob: str, metrics: dict[str, Any],
                 stage_seconds: dict[str, float]) -> list[dict[str, Any]]:
    """The rows of the metrics table artifact."""
    rows: list[dict[str, Any]] = [
        {"item": "style", "value": name},
        {"item": "style image", "value": source},
        {"item": "model", "value": model_blob},
        {"item": "architecture", "value": metrics.get("arch")},
        {"item": "steps", "value": metrics.get("steps")},
        {"item": "training seconds", "value": round(float(metrics.get("seconds", 0.0)), 2)},
        {"item": "steps/s", "value": round(float(metrics.get("steps_per_second") or 0.0), 3)},
        {"item": "device", "value": metrics.get("device_name")},
        {"item": "ranks", "value": metrics.get("world_size")},
    ]
    rows += [{"item": f"{loss} loss", "value": round(float(value), 5)}
             for loss, value in metrics.get("losses", {}).items()]
    rows += [{"item": f"{stage} seconds", "value": round(seconds, 2)}
             for stage, seconds in stage_seconds.items()]
    return rows


@flow(name="train-style", flow_run_name=_run_name, log_prints=True)
def train_style(
    style_image: str, name: str | None = None, steps: int | None = None, etag: str | None = None
) -> str:
    """Train a style network on one image from the styles container and register it.

    Args:
        style_image: Blob path in the styles container, e.g. ``the_wave.jpg``.
        name: Style name to register; default: the image's file name without its extension.
        steps: Training steps; default: the ``training.steps`` setting
            (``RESTYLE_TRAINING__STEPS``, 1500, about 75 s on one H200).
        etag: The blob version the triggering event saw (informational; the run trains on the
            version it downloads).

    Returns:
        The registered model's blob path, ``models/<name>.safetensors``.
    """
    settings = RestyleSettings()
    logger = get_run_logger()
    store = make_blob_store(settings.storage)
    models = settings.storage.models_container
    store.ensure_containers([models])
    run_id = str(flow_run.get_id() or "local")
    work = settings.work_dir / run_id
    target: TrainingTarget | None = None
    try:
        target = plan_training(style_image, name, settings)
        args = training_args(settings.training, target.name, settings.compute.device, steps)
        clock: dict[str, float] = {}
        started = time.monotonic()
        src = work / "source" / PurePosixPath(target.style_blob).name
        version = fetch_input(store, target.styles_container, target.style_blob, src)
        if etag and etag.strip('"') != version.etag:
            logger.warning("event saw etag %s; training on the newer version %s", etag,
                           version.etag)
        width, height = check_style_image(src, target.label)
        content_count = prepare_training_input(src, settings.training.content_dir,
                                               work / "gpu-in")
        clock["prepare"] = time.monotonic() - started
        started = time.monotonic()
        job = GpuJob(
            module="gpu.train",
            input_dir=work / "gpu-in",
            output_dir=work / "gpu-out",
            args=args,
            ranks=settings.compute.ranks,
            name=f"train {target.name}",
        )
        gpu = run_gpu_job(job, settings)
        clock["train job"] = time.monotonic() - started
        weights, metrics_path = work / "gpu-out" / WEIGHTS_NAME, work / "gpu-out" / METRICS_NAME
        if not weights.is_file() or not metrics_path.is_file():
            raise RuntimeError(f"gpu.train finished without {WEIGHTS_NAME} and {METRICS_NAME}")
        metrics = json.loads(metrics_path.read_text())
        info = {
            "name": target.name,
            "style_image": target.label,
            "style_image_etag": version.etag,
            "style_image_size": [width, height],
            "content_images": content_count,
            "metrics": metrics,
            "training": json.loads(read_metadata(weights).get("training", "{}")),
            "backend": gpu.backend,
            "flow_run_id": run_id,
            "time": datetime.now(UTC).isoformat(),
        }
        model_blob = register_trained_style(store, settings, target.name, weights, info)
        try:
            refresh_style_choices(
                [*shipped_style_names(), *registered_style_names(store, settings)]
            )
        except Exception as exc:  # the style is registered and usable; only the dropdown lags
            logger.warning("style %r is registered, but %s's dropdown was not updated (%s); "
                           "the next `prefect deploy` lists it", target.name, STYLIZE_DEPLOYMENT,
                           exc)
        create_table_artifact(
            table=metrics_rows(target.name, target.label, model_blob, metrics, clock),
            key="train-style-metrics",
            description=f"Training of style {target.name!r} from {target.label}",
        )
        shutil.rmtree(work, ignore_errors=True)
        return model_blob
    except Exception as exc:
        error_name = target.name if target else (name or PurePosixPath(style_image).stem
                                                 or "style")
        styles = settings.storage.styles_container
        report_failure(
            store,
            (models, f"{error_name}.error.json"),
            (styles, target.style_blob if target else style_image.removeprefix(f"{styles}/")),
            exc,
            run_id,
            {"style_image": style_image, "name": error_name},
        )
        shutil.rmtree(work, ignore_errors=True)
        raise

