"""The painting controls: blob-metadata parsing, precedence, bounds, and what a run records."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from pydantic import ValidationError
from safetensors.torch import save_file

from tasks import controls
from tasks.controls import (
    Chosen,
    ControlRequest,
    ControlsError,
    ControlSource,
    RunControls,
    choose_controls,
    read_request,
    request_from_upload,
    resolve,
    style_default_strength,
)
from tasks.events import BlobVersion
from tasks.outputs import RESULT_KEYS
from tasks.settings import ComputeSettings

NOTHING = ControlRequest()


def version(metadata: dict[str, str]) -> BlobVersion:
    return BlobVersion("memory", "videos", "a.mp4", "0x1", 10, metadata=metadata)


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        ({}, NOTHING),
        ({"restyle_strength": "0.3"}, ControlRequest(strength=0.3)),
        ({"restyle_strength": " 1 ", "restyle_stroke_scale": "0.25"},
         ControlRequest(strength=1.0, stroke_scale=0.25)),
        ({"restyle_stroke_scale": "4"}, ControlRequest(stroke_scale=4.0)),
        ({"Restyle_Strength": "0", "RESTYLE_PRESERVE_COLORS": "Yes"},
         ControlRequest(strength=0.0, preserve_colors=True)),
        *[({"restyle_preserve_colors": word}, ControlRequest(preserve_colors=True))
          for word in ("true", "TRUE", "1", "yes")],
        *[({"restyle_preserve_colors": word}, ControlRequest(preserve_colors=False))
          for word in ("false", "False", "0", "no", "NO")],
        ({"owner": "news-desk", "restyle_strength": "0.5"}, ControlRequest(strength=0.5)),
    ],
)
def test_an_upload_chooses_its_controls_with_metadata(
    metadata: dict[str, str], expected: ControlRequest
) -> None:
    assert request_from_upload(metadata) == expected


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("restyle_strength", "1.5", r"blob metadata restyle_strength='1.5' is out of range: it "
         r"must be within \[0, 1\]"),
        ("restyle_strength", "-0.1", r"restyle_strength='-0.1' is out of range: .*\[0, 1\]"),
        ("restyle_strength", "nan", r"restyle_strength='nan' is out of range"),
        ("restyle_strength", "inf", r"restyle_strength='inf' is out of range"),
        ("restyle_strength", "strong", r"restyle_strength='strong' is not a number; use one in "
         r"\[0, 1\]"),
        ("restyle_stroke_scale", "0.1", r"restyle_stroke_scale='0.1' is out of range: it must "
         r"be within \[0.25, 4\]"),
        ("restyle_stroke_scale", "5", r"restyle_stroke_scale='5' is out of range"),
        ("restyle_stroke_scale", "", r"restyle_stroke_scale='' is not a number"),
        ("restyle_preserve_colors", "maybe", "restyle_preserve_colors='maybe' is not a yes/no "
         "value; use true/1/yes or false/0/no"),
    ],
)
def test_a_bad_metadata_value_is_an_error_naming_the_key_the_value_and_the_range(
    key: str, value: str, message: str
) -> None:
    with pytest.raises(ControlsError, match=message):
        request_from_upload({key: value})


def test_an_unknown_restyle_key_is_an_error_that_lists_the_real_ones() -> None:
    with pytest.raises(ControlsError, match="unknown blob metadata restyle_strenght='0.3': the "
                       "painting controls are restyle_strength, restyle_stroke_scale, "
                       "restyle_preserve_colors"):
        request_from_upload({"restyle_strenght": "0.3", "restyle_stroke_scale": "2"})
    with pytest.raises(ControlsError, match="Restyle_Colours"):
        request_from_upload({"Restyle_Colours": "yes"})
    # The keys restyle writes on its results are allowed, so a result can be an input again.
    result_metadata = {key: "x/y" for key in RESULT_KEYS} | {"restyle_strength": "0.2"}
    assert request_from_upload(result_metadata, ignore=RESULT_KEYS).strength == 0.2
    with pytest.raises(ControlsError, match="restyle_source"):
        request_from_upload(result_metadata)


def test_each_control_comes_from_the_first_source_that_sets_it() -> None:
    settings = ComputeSettings(strength=0.6, stroke_scale=2.0, preserve_colors=True)
    parameter = ControlRequest(strength=0.2)
    metadata = ControlRequest(strength=0.9, stroke_scale=0.5)

    chosen = resolve(parameter, metadata, settings, style_default=0.45)
    assert chosen == RunControls(Chosen(0.2, ControlSource.PARAMETER),
                                 Chosen(0.5, ControlSource.METADATA),
                                 Chosen(True, ControlSource.SETTING))

    chosen = resolve(NOTHING, metadata, settings, style_default=0.45)
    assert chosen.strength == Chosen(0.9, ControlSource.METADATA)
    assert resolve(NOTHING, NOTHING, settings, 0.45).strength == Chosen(
        0.6, ControlSource.SETTING)

    plain = resolve(NOTHING, NOTHING, ComputeSettings(), style_default=0.45)
    assert plain == RunControls(Chosen(0.45, ControlSource.STYLE_DEFAULT),
                                Chosen(1.0, ControlSource.SETTING),
                                Chosen(False, ControlSource.SETTING))
    # An explicit "no" outranks a setting's "yes"; 0 is a value, not "unset".
    off = resolve(ControlRequest(strength=0.0, preserve_colors=False), NOTHING, settings, 0.45)
    assert (off.strength, off.preserve_colors) == (Chosen(0.0, ControlSource.PARAMETER),
                                                   Chosen(False, ControlSource.PARAMETER))


def test_the_style_default_is_read_from_the_weights_file(
    tiny_conditioned_model_path: Path, tiny_model_path: Path, tmp_path: Path
) -> None:
    assert style_default_strength(tiny_conditioned_model_path) == 0.45
    assert style_default_strength(tiny_model_path) == 1.0  # no strength control: the full style
    import torch

    older = tmp_path / "older.safetensors"  # written before strength existed
    save_file({"w": torch.zeros(1)}, str(older), metadata={"arch": "stylenet"})
    assert style_default_strength(older) == 1.0


def test_the_chosen_values_reach_the_gpu_job_and_are_checked_again() -> None:
    chosen = RunControls(Chosen(0.3, ControlSource.METADATA), Chosen(2.0, ControlSource.PARAMETER),
                         Chosen(True, ControlSource.METADATA))
    args = chosen.apply(ComputeSettings()).stylize_args()
    assert args[4:] == ("--strength", "0.3", "--stroke-scale", "2.0", "--preserve-colors")
    # A value that escaped every check before still cannot reach the job.
    with pytest.raises(ValidationError, match="strength"):
        RunControls(Chosen(1.5, ControlSource.PARAMETER), chosen.stroke_scale,
                    chosen.preserve_colors).apply(ComputeSettings())


def test_a_result_records_its_controls_and_is_recognized_by_them() -> None:
    chosen = RunControls(Chosen(0.45, ControlSource.STYLE_DEFAULT),
                         Chosen(1.0, ControlSource.SETTING), Chosen(False, ControlSource.SETTING))
    metadata = chosen.metadata()
    assert metadata == {"restyle_strength": "0.45", "restyle_stroke_scale": "1.0",
                        "restyle_preserve_colors": "false"}
    assert read_request(metadata) == chosen.values()
    assert chosen.made({**metadata, "restyle_source": "videos/a.mp4"})
    # The same values asked for explicitly make the same picture.
    explicit = RunControls(Chosen(0.45, ControlSource.PARAMETER), chosen.stroke_scale,
                           chosen.preserve_colors)
    assert explicit.made(metadata)
    assert not chosen.made({**metadata, "restyle_strength": "0.5"})
    assert not chosen.made({**metadata, "restyle_preserve_colors": "true"})
    assert not chosen.made({})  # a result made before controls were recorded
    assert not chosen.made({**metadata, "restyle_strength": "garbage"})


def test_the_stats_rows_show_each_value_and_its_source() -> None:
    chosen = RunControls(Chosen(0.45, ControlSource.STYLE_DEFAULT),
                         Chosen(2.0, ControlSource.METADATA), Chosen(True, ControlSource.PARAMETER))
    assert chosen.rows() == [
        {"item": "strength", "value": "0.45 (style default)"},
        {"item": "stroke scale", "value": "2 (blob metadata)"},
        {"item": "original colours", "value": "yes (parameter)"},
    ]


def test_the_task_reads_the_input_versions_metadata_and_the_styles_default(
    tiny_conditioned_model_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(controls, "get_run_logger", lambda: logging.getLogger("test"))
    caplog.set_level(logging.INFO, "test")
    source = version({"restyle_stroke_scale": "0.5", "restyle_flow_run_id": "r"})
    chosen = choose_controls.fn(NOTHING, source, ComputeSettings(), tiny_conditioned_model_path,
                                ignore=RESULT_KEYS)
    assert chosen == RunControls(Chosen(0.45, ControlSource.STYLE_DEFAULT),
                                 Chosen(0.5, ControlSource.METADATA),
                                 Chosen(False, ControlSource.SETTING))
    assert "painting with strength 0.45 (style default), stroke scale 0.5 (blob metadata)" in (
        caplog.text)
    # A bad value fails the run even when a parameter would override it: the upload is wrong.
    with pytest.raises(ControlsError, match="restyle_strength='2'"):
        choose_controls.fn(ControlRequest(strength=0.5), version({"restyle_strength": "2"}),
                           ComputeSettings(), tiny_conditioned_model_path)
