"""What one run reads and writes, resolved from its parameters before any work is done.

Pure functions of the parameters and the settings, so a failure hook or the crash recovery
resolves the same blobs as the run itself did (:mod:`tasks.failures`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath

from gpu.train_data import IMAGE_SUFFIXES, ImageError
from tasks.naming import BlobNameError, BlobRef, canonical_blob_name, stylized_names
from tasks.settings import RestyleSettings
from tasks.styles import AUTO_STYLE, check_trainable_name, shipped_style_names, validate_style_name


@dataclass(frozen=True)
class StylizeTarget:
    """One stylize run's input, style, result and error report (naming: :mod:`tasks.naming`)."""

    source: BlobRef
    style: str
    output: BlobRef
    error: BlobRef


def plan_stylize(video: str, style: str | None, settings: RestyleSettings) -> StylizeTarget:
    """Resolve the input blob, the style and the output names for ``video``.

    The style is ``style`` unless it is ``auto`` (or empty); then the blob's first folder, and
    for a blob directly in the container the ``default_style`` setting.

    Raises:
        BlobNameError: the name is not canonical, has no extension, or is too long.
        UnknownStyleError: the style is not a valid style name.
    """
    storage = settings.storage
    blob = canonical_blob_name(video, storage.input_container)
    path = PurePosixPath(blob)
    if not path.suffix:
        raise BlobNameError(f"blob name {video!r} has no extension, so it is not a video")
    folder_style = path.parts[0] if len(path.parts) > 1 else None
    explicit = style if style and style != AUTO_STYLE else None
    chosen = validate_style_name(explicit or folder_style or settings.default_style)
    output, error = stylized_names(blob, chosen)
    return StylizeTarget(
        source=BlobRef(storage.input_container, blob),
        style=chosen,
        output=BlobRef(storage.output_container, output),
        error=BlobRef(storage.output_container, error),
    )


@dataclass(frozen=True)
class TrainingTarget:
    """One train-style run's style image, the style's name and where its files go."""

    source: BlobRef
    name: str
    weights: BlobRef
    error: BlobRef


def plan_training(style_image: str, name: str | None, settings: RestyleSettings) -> TrainingTarget:
    """Resolve the style blob and the style name (default: the blob's stem).

    Raises:
        BlobNameError: the name is not canonical.
        ImageError: the blob's extension is not one of a style image.
        UnknownStyleError: the name is not a valid style name.
        ShippedStyleError: the name is a shipped style's.
    """
    storage = settings.storage
    blob = canonical_blob_name(style_image, storage.styles_container)
    path = PurePosixPath(blob)
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise ImageError(f"{storage.styles_container}/{blob}: a style image must be a "
                         f"{'/'.join(IMAGE_SUFFIXES)} file")
    chosen = check_trainable_name(name or path.stem, shipped_style_names())
    models = storage.models_container
    return TrainingTarget(
        source=BlobRef(storage.styles_container, blob),
        name=chosen,
        weights=BlobRef(models, f"{chosen}.safetensors"),
        error=BlobRef(models, f"{chosen}.error.json"),
    )
