"""Fast checks of the flow's pure parts: naming, style choice, the mpiexec line, the stats."""

from __future__ import annotations

import logging
import os
import typing
from pathlib import Path
from types import SimpleNamespace

import pytest
from prefect.utilities.callables import parameter_schema
from pydantic import TypeAdapter, ValidationError

from flows.stylize import plan_target, stylize_video
from gpu.jobdir import ChunkReport
from tasks import video
from tasks.dispatch import GpuJob, build_mpiexec_argv
from tasks.reporting import RunStats
from tasks.settings import ComputeSettings, RestyleSettings
from tasks.styles import AUTO_STYLE, StyleChoice, UnknownStyleError, shipped_style_names


@pytest.fixture
def settings() -> RestyleSettings:
    return RestyleSettings(default_style="udnie")


@pytest.mark.parametrize(
    ("video", "style", "output", "chosen"),
    [
        ("starry_night/clip.mov", AUTO_STYLE, "starry_night/clip.mp4", "starry_night"),
        ("videos/starry_night/clip.mov", AUTO_STYLE, "starry_night/clip.mp4", "starry_night"),
        ("clip.webm", AUTO_STYLE, "udnie/clip.mp4", "udnie"),
        ("clip.webm", "the_scream", "the_scream/clip.mp4", "the_scream"),
        ("starry_night/a/b.mp4", AUTO_STYLE, "starry_night/a/b.mp4", "starry_night"),
        ("holiday/beach.mp4", "udnie", "udnie/holiday/beach.mp4", "udnie"),
    ],
)
def test_plan_target_maps_input_to_output(
    settings: RestyleSettings, video: str, style: str, output: str, chosen: str
) -> None:
    target = plan_target(video, style, settings)
    assert (target.output_container, target.output_blob, target.style) == (
        "stylized", output, chosen)
    assert target.error_blob == output.removesuffix(".mp4") + ".error.json"
    assert target.input_container == "videos"


@pytest.mark.parametrize("video", ["", "/abs.mp4", "a/../../etc/passwd.mp4", "noext"])
def test_plan_target_rejects_paths_that_are_not_videos(
    settings: RestyleSettings, video: str
) -> None:
    with pytest.raises(ValueError, match="not a video blob path"):
        plan_target(video, AUTO_STYLE, settings)


def test_style_names_are_restricted(settings: RestyleSettings) -> None:
    with pytest.raises(UnknownStyleError, match="not valid"):
        plan_target("x.mp4", "Bad Name!", settings)


def test_style_parameter_is_a_dropdown_led_by_auto() -> None:
    schema = parameter_schema(stylize_video.fn).model_dump()["properties"]["style"]
    assert schema["type"] == "string"
    assert schema["default"] == AUTO_STYLE
    assert schema["enum"][0] == AUTO_STYLE
    assert set(shipped_style_names()) <= set(schema["enum"])
    # At run time any registered name is accepted; the flow checks it against the registry.
    assert TypeAdapter(StyleChoice).validate_python("registered-later") == "registered-later"


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


def test_mpiexec_line_runs_the_module_over_the_folders(tmp_path: Path) -> None:
    job = GpuJob("gpu.stylize", tmp_path / "in", tmp_path / "out", ("--device", "cpu"), ranks=3)
    argv = build_mpiexec_argv(job, python="/venv/bin/python")
    assert argv[0].endswith("mpiexec")
    assert argv[1:7] == ["-n", "3", "--oversubscribe", "--bind-to", "none", *argv[6:7]]
    tail = ["/venv/bin/python", "-m", "gpu.stylize", "--input", str(tmp_path / "in"),
            "--output", str(tmp_path / "out"), "--device", "cpu"]
    assert argv[-len(tail):] == tail
    assert ("--allow-run-as-root" in argv) == (os.geteuid() == 0)


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
