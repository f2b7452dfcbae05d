"""The painting controls of one stylize run: strength, brush size and original colours.

Each control comes from the first of these that sets it (:func:`resolve`):

1. the run's parameter (the UI's Run form, ``prefect deployment run --param strength=0.4``);
2. the input blob's metadata, so an upload carries its own choice: ``restyle_strength`` in
   [0, 1], ``restyle_stroke_scale`` in [0.25, 4], ``restyle_preserve_colors`` (true/false,
   1/0, yes/no, any case). Names use ``_`` because Azure metadata names must be C#
   identifiers;
3. the settings (``RESTYLE_COMPUTE__STRENGTH`` and the like);
4. for strength only, the style's own default, stored in its weights file.

A value out of range, one that is not a number (or a yes/no), and an unknown ``restyle_*`` key
(a typo such as ``restyle_strenght``) are errors that name the key, the value and what is
allowed. The chosen values, each with where it came from (:class:`RunControls`), go into the
run's stats table and onto the result blob under the same three keys.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Generic, TypeVar

from prefect import get_run_logger, task

from gpu.model import check_strength, read_metadata
from tasks.events import BlobVersion
from tasks.settings import ComputeSettings

METADATA_PREFIX = "restyle_"
STRENGTH_KEY = "restyle_strength"
STROKE_SCALE_KEY = "restyle_stroke_scale"
PRESERVE_COLORS_KEY = "restyle_preserve_colors"
CONTROL_KEYS = (STRENGTH_KEY, STROKE_SCALE_KEY, PRESERVE_COLORS_KEY)
_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no")


def _setting_bounds(name: str) -> tuple[float, float]:
    """The ``ge``/``le`` bounds of a ComputeSettings field: the settings own the ranges."""
    bounds = {kind: getattr(rule, kind) for rule in ComputeSettings.model_fields[name].metadata
              for kind in ("ge", "le") if hasattr(rule, kind)}
    return float(bounds["ge"]), float(bounds["le"])


STRENGTH_RANGE = _setting_bounds("strength")
STROKE_SCALE_RANGE = _setting_bounds("stroke_scale")


class ControlsError(ValueError):
    """A painting control the run was given cannot be used."""


class ControlSource(StrEnum):
    """Where a control's value came from, highest precedence first."""

    PARAMETER = "parameter"
    METADATA = "blob metadata"
    SETTING = "setting"
    STYLE_DEFAULT = "style default"


@dataclass(frozen=True)
class ControlRequest:
    """The controls one source asks for; ``None`` leaves a control to the next source."""

    strength: float | None = None
    stroke_scale: float | None = None
    preserve_colors: bool | None = None


T = TypeVar("T", float, bool)


@dataclass(frozen=True)
class Chosen(Generic[T]):
    """A control's value and the source it came from."""

    value: T
    source: ControlSource


@dataclass(frozen=True)
class RunControls:
    """The controls a run paints with, each with its source."""

    strength: Chosen[float]
    stroke_scale: Chosen[float]
    preserve_colors: Chosen[bool]

    def values(self) -> ControlRequest:
        return ControlRequest(self.strength.value, self.stroke_scale.value,
                              self.preserve_colors.value)

    def metadata(self) -> dict[str, str]:
        """The values as result-blob metadata, under the keys an upload uses."""
        return {STRENGTH_KEY: repr(self.strength.value),
                STROKE_SCALE_KEY: repr(self.stroke_scale.value),
                PRESERVE_COLORS_KEY: "true" if self.preserve_colors.value else "false"}

    def made(self, metadata: Mapping[str, str]) -> bool:
        """Whether a result with ``metadata`` was painted with these values (a result that
        records none, or unreadable ones, was not)."""
        try:
            return read_request(metadata) == self.values()
        except ControlsError:
            return False

    def apply(self, compute: ComputeSettings) -> ComputeSettings:
        """``compute`` with these values, checked against the settings' bounds once more."""
        return compute.with_controls(self.strength.value, self.stroke_scale.value,
                                     self.preserve_colors.value)

    def rows(self) -> list[dict[str, str]]:
        """Rows of the stats table: each value with its source."""
        colours = "yes" if self.preserve_colors.value else "no"
        return [
            {"item": "strength", "value": f"{self.strength.value:g} ({self.strength.source})"},
            {"item": "stroke scale",
             "value": f"{self.stroke_scale.value:g} ({self.stroke_scale.source})"},
            {"item": "original colours", "value": f"{colours} ({self.preserve_colors.source})"},
        ]

    def describe(self) -> str:
        return ", ".join(f"{row['item']} {row['value']}" for row in self.rows())


def _in_range(key: str, raw: str, bounds: tuple[float, float]) -> float:
    low, high = bounds
    try:
        value = float(raw)
    except ValueError:
        raise ControlsError(f"blob metadata {key}={raw!r} is not a number; use one in "
                            f"[{low:g}, {high:g}]") from None
    if math.isnan(value) or not low <= value <= high:
        raise ControlsError(f"blob metadata {key}={raw!r} is out of range: it must be within "
                            f"[{low:g}, {high:g}]")
    return value


def _yes_no(key: str, raw: str) -> bool:
    word = raw.strip().lower()
    if word not in _TRUE + _FALSE:
        raise ControlsError(f"blob metadata {key}={raw!r} is not a yes/no value; use "
                            f"{'/'.join(_TRUE)} or {'/'.join(_FALSE)}")
    return word in _TRUE


def read_request(metadata: Mapping[str, str]) -> ControlRequest:
    """The controls named in blob ``metadata`` (names in any case); other keys are ignored.

    Raises:
        ControlsError: a value is not a number (or yes/no), or out of range.
    """
    found = {key.lower(): value for key, value in metadata.items()}
    strength, scale, colours = (found.get(key) for key in CONTROL_KEYS)
    return ControlRequest(
        strength=None if strength is None else _in_range(STRENGTH_KEY, strength,
                                                         STRENGTH_RANGE),
        stroke_scale=None if scale is None else _in_range(STROKE_SCALE_KEY, scale,
                                                          STROKE_SCALE_RANGE),
        preserve_colors=None if colours is None else _yes_no(PRESERVE_COLORS_KEY, colours),
    )


def request_from_upload(metadata: Mapping[str, str], ignore: Collection[str] = ()
                        ) -> ControlRequest:
    """The controls an input blob's ``metadata`` asks for.

    Args:
        ignore: ``restyle_*`` keys that are not controls but are allowed (those restyle writes
            on its results, so a result copied back as an input still runs).

    Raises:
        ControlsError: an unknown ``restyle_*`` key, or a bad value (:func:`read_request`).
    """
    allowed = {*CONTROL_KEYS, *(key.lower() for key in ignore)}
    unknown = sorted(key for key in metadata
                     if key.lower().startswith(METADATA_PREFIX) and key.lower() not in allowed)
    if unknown:
        named = ", ".join(f"{key}={metadata[key]!r}" for key in unknown)
        raise ControlsError(f"unknown blob metadata {named}: the painting controls are "
                            f"{', '.join(CONTROL_KEYS)}")
    return read_request(metadata)


def style_default_strength(model: Path) -> float:
    """The strength a style's weights file paints with when none is asked for (1 for files
    written before strength existed, as the GPU job reads them)."""
    return check_strength(float(read_metadata(model).get("default_strength", 1.0)))


def resolve(parameters: ControlRequest, metadata: ControlRequest, compute: ComputeSettings,
            style_default: float) -> RunControls:
    """Each control from the first source that sets it (module docstring)."""
    layers = (
        (ControlSource.PARAMETER, parameters),
        (ControlSource.METADATA, metadata),
        (ControlSource.SETTING,
         ControlRequest(compute.strength, compute.stroke_scale, compute.preserve_colors)),
        (ControlSource.STYLE_DEFAULT, ControlRequest(strength=style_default)),
    )

    def first(name: str) -> Chosen:
        return next(Chosen(getattr(asked, name), source) for source, asked in layers
                    if getattr(asked, name) is not None)

    return RunControls(first("strength"), first("stroke_scale"), first("preserve_colors"))


@task(name="choose-controls")
def choose_controls(parameters: ControlRequest, source: BlobVersion, compute: ComputeSettings,
                    model: Path, ignore: Collection[str] = ()) -> RunControls:
    """The controls of a run with these ``parameters`` on input version ``source`` in the style
    whose weights are ``model`` (:func:`resolve`; ``ignore``: see :func:`request_from_upload`).

    Raises:
        ControlsError: the input's metadata asks for something unusable.
    """
    controls = resolve(parameters, request_from_upload(source.metadata, ignore), compute,
                       style_default_strength(model))
    get_run_logger().info("painting with %s", controls.describe())
    return controls
