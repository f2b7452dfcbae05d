"""The train-style flow's steps: check the image, lay out the job folder, register the style.

Plain functions (tested as data) and Prefect tasks of about ten lines each; the flow itself is
``flows/train_style.py``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import DeploymentUpdate
from prefect.exceptions import ObjectNotFound

from gpu.train import METRICS_NAME, WEIGHTS_NAME
from gpu.train_data import IMAGE_SUFFIXES, ImageError, load_style_image
from tasks.settings import RestyleSettings, TrainingSettings
from tasks.storage import BlobStore
from tasks.styles import register_style

STYLIZE_DEPLOYMENT = "stylize-video/default"
"""The deployment whose ``style`` dropdown lists the styles (flows/stylize.py)."""
CONTENT_HELP = (
    "build it with `python tools/assemble_content.py` or point RESTYLE_TRAINING__CONTENT_DIR "
    "at a folder of content images"
)


def training_args(
    training: TrainingSettings, name: str, device: str, steps: int | None = None
) -> tuple[str, ...]:
    """The ``gpu.train`` arguments after ``--input``/``--output`` (pure; tested as a tuple).

    A conditioned network (the default) takes the strength control; its default strength is
    ``training.default_strength`` when set, else ``gpu.train``'s for new styles.

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
        "--structure-weight", str(training.structure_weight),
    )
    if training.conditioned:
        args += ("--conditioned",)
        if training.default_strength is not None:
            args += ("--default-strength", repr(training.default_strength))
    args += ("--device", device)
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


def read_training_output(output_dir: Path) -> tuple[Path, dict[str, Any]]:
    """The trained weights and the metrics ``gpu.train`` wrote to ``output_dir``.

    Raises:
        RuntimeError: the job finished without them.
    """
    weights, metrics = output_dir / WEIGHTS_NAME, output_dir / METRICS_NAME
    if not weights.is_file() or not metrics.is_file():
        raise RuntimeError(f"gpu.train finished without {WEIGHTS_NAME} and {METRICS_NAME}")
    return weights, json.loads(metrics.read_text())


@task(name="register-style", retries=2, retry_delay_seconds=2)
def register_trained_style(
    store: BlobStore, settings: RestyleSettings, name: str, weights: Path, info: dict[str, Any],
    metadata: dict[str, str],
) -> str:
    """Upload the weights and their description; returns the weights' blob path."""
    register_style(store, settings, name, weights, info, metadata)
    get_run_logger().info("registered style %r (%d bytes)", name, weights.stat().st_size)
    return f"{settings.storage.models_container}/{name}.safetensors"


def update_style_choices(names: list[str], log: logging.Logger | logging.LoggerAdapter[Any],
                         deployment: str = STYLIZE_DEPLOYMENT) -> bool:
    """Offer ``names`` in ``deployment``'s ``style`` dropdown without redeploying it.

    Returns:
        Whether the deployment's parameter schema was changed.
    """
    with get_client(sync_client=True) as client:
        try:
            current = client.read_deployment_by_name(deployment)
        except ObjectNotFound:
            log.warning("deployment %s not found; no style dropdown to update", deployment)
            return False
        schema = with_style_choices(current.parameter_openapi_schema or {}, names)
        if schema is None:
            return False
        client.update_deployment(current.id, DeploymentUpdate(parameter_openapi_schema=schema))
    log.info("%s now offers styles %s", deployment, schema["properties"]["style"]["enum"])
    return True


@task(name="refresh-style-choices", retries=2, retry_delay_seconds=2)
def refresh_style_choices(names: list[str], deployment: str = STYLIZE_DEPLOYMENT) -> bool:
    """:func:`update_style_choices` as a task. ``names`` is the whole registry (shipped and
    registered), not just the new style, so a choice lost to two trainings patching at once is
    restored by the next one."""
    return update_style_choices(names, get_run_logger(), deployment)


def metrics_rows(name: str, source: str, model_blob: str, metrics: dict[str, Any],
                 stage_seconds: dict[str, float]) -> list[dict[str, Any]]:
    """The rows of the metrics table artifact."""
    rows: list[dict[str, Any]] = [
        {"item": "style", "value": name},
        {"item": "style image", "value": source},
        {"item": "model", "value": model_blob},
        {"item": "architecture", "value": metrics.get("arch")},
        {"item": "steps", "value": metrics.get("steps")},
        {"item": "default strength", "value": metrics.get("default_strength")},
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
