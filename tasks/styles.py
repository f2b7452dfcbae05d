"""Style models: the shipped ones in ``gpu/styles/`` and those trained by ``train-style``.

Shipped styles are listed in ``gpu/styles/manifest.json`` beside their weights. Styles trained
by users live in the models container as ``<name>.safetensors``. Both kinds are valid values of
the stylize flow's ``style`` parameter; :data:`StyleChoice` renders them as a dropdown in the
Prefect UI (the choices are read when the deployment is registered, and ``train-style`` updates
the deployment when it registers a new one).
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any

from pydantic import WithJsonSchema

from tasks.events import BlobVersion
from tasks.settings import RestyleSettings
from tasks.storage import BlobNotFoundError, BlobStore

SHIPPED_DIR = Path(__file__).resolve().parent.parent / "gpu" / "styles"
MANIFEST_PATH = SHIPPED_DIR / "manifest.json"
STYLE_NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
AUTO_STYLE = "auto"
"""Pick the style from the blob's folder, else the configured default."""


class UnknownStyleError(ValueError):
    """The requested style is neither shipped nor registered."""


def shipped_manifest() -> list[dict[str, Any]]:
    """Entries of ``gpu/styles/manifest.json`` (empty when no style has been shipped yet)."""
    if not MANIFEST_PATH.exists():
        return []
    return list(json.loads(MANIFEST_PATH.read_text())["styles"])


def shipped_style_names() -> list[str]:
    return [entry["name"] for entry in shipped_manifest()]


def registered_style_names(store: BlobStore, settings: RestyleSettings) -> list[str]:
    """Styles that train-style registered in the models container."""
    container = settings.storage.models_container
    return sorted(
        version.blob.removesuffix(".safetensors")
        for version in store.list_versions(container)
        if version.blob.endswith(".safetensors") and "/" not in version.blob
    )


def available_style_names() -> list[str]:
    """Shipped plus registered styles; registered ones only if storage answers quickly."""
    names = shipped_style_names()
    try:
        from tasks.storage import make_blob_store

        settings = RestyleSettings()
        store = make_blob_store(settings.storage, quick=True)
        names += [n for n in registered_style_names(store, settings) if n not in names]
    except Exception:  # storage not reachable while rendering a schema: shipped styles only
        pass
    return names


StyleChoice = Annotated[
    str,
    WithJsonSchema({"type": "string", "enum": [AUTO_STYLE, *available_style_names()]}),
]
"""A style name: plain ``str`` at run time (the flow checks it against the registry, so a style
registered since this module was imported still works), a dropdown of the styles known at import
in the Prefect UI. Registering a deployment imports the flow, so it lists the styles of that
moment; train-style refreshes the deployment's schema when it registers a new style."""


def validate_style_name(name: str) -> str:
    if not STYLE_NAME_PATTERN.match(name):
        raise UnknownStyleError(
            f"style name {name!r} is not valid: use lower-case letters, digits, '_' and '-'"
        )
    return name


class ShippedStyleError(ValueError):
    """A trained style may not take the name of a shipped one."""


def check_trainable_name(name: str, shipped: Iterable[str]) -> str:
    """``name`` if a newly trained style may be registered under it.

    Raises:
        UnknownStyleError: not a valid style name.
        ShippedStyleError: a shipped style already has this name.
    """
    validate_style_name(name)
    if name in set(shipped):
        raise ShippedStyleError(
            f"{name!r} is a shipped style and cannot be replaced; pick another name"
        )
    return name


def register_style(
    store: BlobStore, settings: RestyleSettings, name: str, weights: Path, info: dict[str, Any]
) -> BlobVersion:
    """Make ``name`` a style: ``<name>.safetensors`` and ``<name>.json`` in the models container.

    The description goes up first and the weights last, because the weights' blob is what makes
    the style exist (:func:`registered_style_names`); a stale ``<name>.error.json`` is removed.

    Returns:
        The version of the uploaded weights.
    """
    container = settings.storage.models_container
    store.ensure_containers([container])
    store.upload_json(container, f"{name}.json", info)
    version = store.upload_file(
        container, f"{name}.safetensors", weights, content_type="application/octet-stream"
    )
    store.delete(container, f"{name}.error.json")
    return version


def fetch_style_model(name: str, store: BlobStore, settings: RestyleSettings, dest: Path) -> Path:
    """Copy the weights of style ``name`` to ``dest``, from the shipped set or the models store.

    Raises:
        UnknownStyleError: no such style, with the list of known ones.
    """
    validate_style_name(name)
    shipped = SHIPPED_DIR / f"{name}.safetensors"
    dest.parent.mkdir(parents=True, exist_ok=True)
    if name in shipped_style_names() and shipped.exists():
        shutil.copyfile(shipped, dest)
        return dest
    try:
        store.download(settings.storage.models_container, f"{name}.safetensors", dest)
    except BlobNotFoundError:
        known = shipped_style_names() + registered_style_names(store, settings)
        raise UnknownStyleError(
            f"unknown style {name!r}; known styles: {', '.join(known) or 'none'}"
        ) from None
    return dest
