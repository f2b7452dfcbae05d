"""Style models: the shipped ones in ``gpu/styles/`` and those trained by ``train-style``.

Shipped styles are listed in ``gpu/styles/manifest.json`` beside their weights. Styles trained
by users live in the models container as ``<name>.safetensors``. Both kinds are valid values of
the stylize flow's ``style`` parameter. :data:`StyleChoice` renders the shipped ones as a
dropdown in the Prefect UI, read from the manifest at import with no network access; the
registered ones are added to the deployment's dropdown after each deploy
(``python -m deployments.apply``) and by ``train-style`` when it registers one.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any

from azure.core.exceptions import ResourceNotFoundError
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
    """Styles that train-style registered in the models container (none if it does not exist)."""
    container = settings.storage.models_container
    try:
        return sorted(
            version.blob.removesuffix(".safetensors")
            for version in store.list_versions(container)
            if version.blob.endswith(".safetensors") and "/" not in version.blob
        )
    except ResourceNotFoundError:  # no style was ever registered
        return []


def known_style_names(store: BlobStore, settings: RestyleSettings) -> list[str]:
    """Shipped styles, then registered ones."""
    names = shipped_style_names()
    return names + [n for n in registered_style_names(store, settings) if n not in names]


StyleChoice = Annotated[
    str,
    WithJsonSchema({"type": "string", "enum": [AUTO_STYLE, *shipped_style_names()]}),
]
"""A style name: plain ``str`` at run time (the flow checks it against the registry, so any
registered style works), a dropdown of the shipped styles in the flow's schema; the deployment's
copy of the schema also lists the registered ones (module docstring)."""


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
    store: BlobStore, settings: RestyleSettings, name: str, weights: Path, info: dict[str, Any],
    metadata: dict[str, str] | None = None,
) -> BlobVersion:
    """Make ``name`` a style: ``<name>.safetensors`` and ``<name>.json`` in the models container.

    The description goes up first and the weights last, because the weights' blob is what makes
    the style exist (:func:`registered_style_names`); the weights carry ``metadata`` (the style
    image they were trained on); a stale ``<name>.error.json`` is removed.

    Returns:
        The version of the uploaded weights.
    """
    container = settings.storage.models_container
    store.ensure_containers([container])
    store.upload_json(container, f"{name}.json", info)
    version = store.upload_file(
        container, f"{name}.safetensors", weights, content_type="application/octet-stream",
        metadata=metadata,
    )
    store.delete(container, f"{name}.error.json")
    return version


def unknown_style(name: str, store: BlobStore, settings: RestyleSettings) -> UnknownStyleError:
    known = ", ".join(known_style_names(store, settings)) or "none"
    return UnknownStyleError(f"unknown style: {name} (known: {known})")


def require_style(name: str, store: BlobStore, settings: RestyleSettings) -> str:
    """``name`` if it is a shipped or registered style.

    Raises:
        UnknownStyleError: no such style, with the list of known ones.
    """
    validate_style_name(name)
    if name in shipped_style_names():
        return name
    try:
        store.get_version(settings.storage.models_container, f"{name}.safetensors")
    except BlobNotFoundError:
        raise unknown_style(name, store, settings) from None
    return name


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
        raise unknown_style(name, store, settings) from None
    return dest
