"""Fast checks of the flows' pure parts: targets, style choice, frame size, the stats."""

from __future__ import annotations

import logging
import subprocess
import sys
import typing
from pathlib import Path
from types import SimpleNamespace

import pytest
from prefect.utilities.callables import parameter_schema
from pydantic import TypeAdapter, ValidationError

from flows.stylize import stylize_video
from gpu.jobdir import ChunkReport
from tasks import video
from tasks.compute.base import GpuJobResult
from tasks.controls import Chosen, ControlSource, RunControls
from tasks.media import InvalidMediaError
from tasks.naming import BlobNameError
from tasks.reporting import RunStats
from tasks.settings import ComputeSettings, LimitSettings, RestyleSettings
from tasks.styles import (
    AUTO_STYLE,
    StyleChoice,
    UnknownStyleError,
    fetch_style_model,
    require_style,
    shipped_style_names,
)
from tasks.targets import plan_stylize
from tests.memory_store import MemoryBlobStore


@pytest.fixture
def settings() -> RestyleSettings:
    return RestyleSettings(default_style="udnie")


@pytest.mark.parametrize(
    ("video", "style", "output", "chosen"),
    [
        ("starry_night/clip.mov", AUTO_STYLE, "starry_night/clip.mov.starry_night.mp4",
         "starry_night"),
        ("videos/starry_night/clip.mov", AUTO_STYLE, "starry_night/clip.mov.starry_night.mp4",
         "starry_night"),
        ("clip.webm", AUTO_STYLE, "clip.webm.udnie.mp4", "udnie"),
        ("clip.webm", "the_scream", "clip.webm.the_scream.mp4", "the_scream"),
        ("starry_night/a/b.mp4", AUTO_STYLE, "starry_night/a/b.mp4.starry_night.mp4",
         "starry_night"),
        ("holiday/beach.mp4", "udnie", "holiday/beach.mp4.udnie.mp4", "udnie"),
        ("udnie/holiday/beach.mp4", "udnie", "udnie/holiday/beach.mp4.udnie.mp4", "udnie"),
    ],
)
def test_plan_stylize_maps_input_to_output(
    settings: RestyleSettings, video: str, style: str, output: str, chosen: str
) -> None:
    target = plan_stylize(video, style, settings)
    assert (target.output.container, target.output.blob, target.style) == (
        "stylized", output, chosen)
    assert target.error.blob == output.removesuffix(".mp4") + ".error.json"
    assert target.source.container == "videos"
    assert target.source.blob == video.removeprefix("videos/")


def test_twins_that_differ_by_extension_get_their_own_outputs(settings: RestyleSettings) -> None:
    mp4, mov = (plan_stylize(f"a/b.{ext}", "udnie", settings) for ext in ("mp4", "mov"))
    assert mp4.output != mov.output and mp4.error != mov.error


@pytest.mark.parametrize(
    ("video", "message"),
    [("", "empty"), ("/abs.mp4", "not canonical"), ("a/../../etc/passwd.mp4", "not canonical"),
     ("a//b.mp4", "not canonical"), ("a/./b.mp4", "not canonical"), ("noext", "no extension"),
     ("a\nb.mp4", "control characters")],
)
def test_plan_stylize_refuses_names_that_are_not_canonical_videos(
    settings: RestyleSettings, video: str, message: str
) -> None:
    with pytest.raises(BlobNameError, match=message):
        plan_stylize(video, AUTO_STYLE, settings)


def test_style_names_are_restricted(settings: RestyleSettings) -> None:
    with pytest.raises(UnknownStyleError, match="not valid"):
        plan_stylize("x.mp4", "Bad Name!", settings)


def test_an_unknown_style_is_named_with_the_known_ones(
    settings: RestyleSettings, tmp_path: Path
) -> None:
    store = MemoryBlobStore()  # not even a models container yet
    message = f"unknown style: nope \\(known: {', '.join(shipped_style_names())}\\)"
    with pytest.raises(UnknownStyleError, match=message):
        require_style("nope", store, settings)
    with pytest.raises(UnknownStyleError, match=message):
        fetch_style_model("nope", store, settings, tmp_path / "model.safetensors")
    store.put_bytes("models", "mine.safetensors", b"weights")
    assert require_style("mine", store, settings) == "mine"
    with pytest.raises(UnknownStyleError, match="mine\\)$"):
        require_style("nope", store, settings)


def test_style_parameter_is_a_dropdown_led_by_auto() -> None:
    schema = parameter_schema(stylize_video.fn).model_dump()["properties"]["style"]
    assert schema["type"] == "string"
    assert schema["default"] == AUTO_STYLE
    assert schema["enum"][0] == AUTO_STYLE
    assert set(shipped_style_names()) <= set(schema["enum"])
    # At run time any registered name is accepted; the flow checks it against the registry.
    assert TypeAdapter(StyleChoice).validate_python("registered-later") == "registered-later"
    assert schema["enum"] == [AUTO_STYLE, *shipped_style_names()]


def test_importing_the_flows_needs_no_network() -> None:
    """The style dropdown is computed at import; it must not reach storage to do so."""
    script = (
        "import socket\n"
        "def refuse(*args, **kwargs):\n"
        "    raise AssertionError('network access at import')\n"
        "socket.socket.connect = refuse\n"
        "socket.create_connection = refuse\n"
        "import flows.stylize, flows.train_style, flows.recover\n"
        "print('imported')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0 and "imported" in done.stdout, done.stderr[-2000:]


def test_frames_below_the_minimum_size_are_refused_with_the_sizes() -> None:
    limits = LimitSettings()
    video.check_frame_size(limits.min_side, limits.min_side, limits)
    for width, height in ((1, 1), (2, 2), (64, 8)):
        with pytest.raises(InvalidMediaError, match=f"frames are {width}x{height}; restyle needs "
                           f"at least {limits.min_side} px on each side"):
            video.check_frame_size(width, height, limits)


def test_chunk_codec_setting_is_validated_and_its_choice_reaches_the_split(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert RestyleSettings().compute.chunk_codec == "auto"
    monkeypatch.setenv("RESTYLE_COMPUTE__CHUNK_CODEC", "rawvideo")
    assert RestyleSettings().compute.chunk_codec == "rawvideo"
    with pytest.raises(ValidationError, match="chunk_codec"):
        ComputeSettings(chunk_codec="ffv1")

    calls = []
    monkeypatch.setattr(video.media, "split_video", lambda *args: calls.append(args))
    monkeypatch.setattr(video, "get_run_logger", lambda: logging.getLogger("test"))
    chunk_format = SimpleNamespace(reason="yuv420p", pix_fmt="yuv420p")
    probe = SimpleNamespace(video=SimpleNamespace(
        average_fps=25.0, chunk_format=chunk_format, frame_count=100, display_width=64,
        display_height=48))
    for setting, backend in (("auto", "local"), ("auto", "azureml"), ("utvideo", "local")):
        video.split_video.fn(tmp_path / "a.mp4", probe, tmp_path / "in",
                             ComputeSettings(chunk_codec=setting, backend=backend,
                                             chunk_seconds=2))
    # 100 small frames fit the temporary folder's disk many times over.
    assert [(args[3], args[5]) for args in calls] == [
        (50, "rawvideo"), (50, "utvideo"), (50, "utvideo")]


def test_compute_settings_speak_the_gpu_jobs_options(monkeypatch: pytest.MonkeyPatch) -> None:
    from gpu.stylize import COMPILE_MODES, get_args_parser

    choices = typing.get_args(ComputeSettings.model_fields["compile"].annotation)
    assert set(choices) == {"auto", *COMPILE_MODES}
    for mode in choices:
        args = get_args_parser().parse_args(
            ["--input", "i", "--output", "o",
             *ComputeSettings(compile=mode, device="cuda").stylize_args()])
        assert (args.compile, args.device) == (mode, "cuda")
    monkeypatch.setenv("RESTYLE_COMPUTE__COMPILE", "reduce-overhead")
    assert RestyleSettings().compute.stylize_args()[-2:] == ("--compile", "reduce-overhead")
    monkeypatch.setenv("RESTYLE_COMPUTE__COMPILE", "fast")
    with pytest.raises(ValidationError, match="compile"):
        RestyleSettings()


def test_stats_table_has_stage_rates_and_per_rank_counts() -> None:
    reports = [ChunkReport(index=i, rank=i % 2, host="h", frames=10, seconds=1.0, device="cpu")
               for i in range(5)]
    stats = RunStats(video="v.mp4", style="udnie", frames=50, width=64, height=48,
                     stage_seconds={"stylize": 2.0}, reports=reports, gpu_attempts=2,
                     retry_reasons=["preempted"])
    rows = {row["item"]: row["value"] for row in stats.rows()}
    assert rows["frames"] == 50
    assert rows["resolution"] == "64x48"
    assert rows["stylize fps"] == 25.0
    assert rows["rank 0 chunks"] == "3 (30 frames)"
    assert rows["rank 1 chunks"] == "2 (20 frames)"
    assert rows["GPU job attempts"] == 2
    assert rows["retry 1 reason"] == "preempted"
    assert "reused chunks" not in rows


def test_stats_show_attempts_and_reused_chunks_when_the_backend_reports_them() -> None:
    result = SimpleNamespace(backend="local", seconds=1.0, attempts=3, reused_chunks=4,
                             retry_reasons=["rank 1 died", "rank 0 died"])
    rows = {row["item"]: row["value"] for row in RunStats(
        video="v.mp4", style="udnie", frames=10, width=8, height=8,
        **RunStats.gpu_facts(result)).rows()}
    assert (rows["GPU job attempts"], rows["reused chunks"]) == (3, 4)
    assert rows["retry 2 reason"] == "rank 0 died"
    # A backend result without the newer fields still fills the table.
    older = RunStats.gpu_facts(GpuJobResult(backend="azureml", seconds=1.0))
    assert older["gpu_attempts"] == 1 and older["backend"] == "azureml"
    assert RunStats.gpu_facts(SimpleNamespace(backend="local"))["reused_chunks"] is None


def test_stats_table_shows_the_painting_controls_and_their_sources() -> None:
    controls = RunControls(Chosen(0.45, ControlSource.STYLE_DEFAULT),
                           Chosen(0.5, ControlSource.METADATA),
                           Chosen(True, ControlSource.PARAMETER))
    rows = {row["item"]: row["value"] for row in RunStats(
        video="v.mp4", style="udnie", frames=10, width=8, height=8, controls=controls).rows()}
    assert rows["strength"] == "0.45 (style default)"
    assert rows["stroke scale"] == "0.5 (blob metadata)"
    assert rows["original colours"] == "yes (parameter)"


def test_the_run_forms_bounds_are_the_settings_bounds() -> None:
    properties = parameter_schema(stylize_video.fn).model_dump()["properties"]
    for name in ("strength", "stroke_scale"):
        setting = {type(rule).__name__: rule for rule in
                   ComputeSettings.model_fields[name].metadata}
        allowed = properties[name]["anyOf"][0]
        assert (allowed["minimum"], allowed["maximum"]) == (setting["Ge"].ge, setting["Le"].le)
