"""The stylize flow run in this process against the stack's Prefect server and Azurite.

Inputs go to a container the stack's watcher does not watch, so no automation starts a second
run of the same clip. The GPU job is the real one, on CPU, with a tiny seeded style.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from flows import stylize
from tasks.naming import stylized_names
from tasks.settings import RestyleSettings
from tasks.storage import AzureBlobStore, BlobNotFoundError
from tests.clips import make_clip
from tests.stack_api import api

pytestmark = [pytest.mark.stack, pytest.mark.slow]

INPUT_CONTAINER = "flow-videos"


@pytest.fixture
def flow_env(stack_store: AzureBlobStore, monkeypatch: pytest.MonkeyPatch) -> AzureBlobStore:
    monkeypatch.setenv("RESTYLE_STORAGE__INPUT_CONTAINER", INPUT_CONTAINER)
    monkeypatch.setenv("RESTYLE_COMPUTE__DEVICE", "cpu")
    monkeypatch.setenv("RESTYLE_COMPUTE__RANKS", "1")
    stack_store.ensure_containers([INPUT_CONTAINER])
    return stack_store


def failed_tasks(state: Any, expected: set[str], timeout: float = 30.0) -> set[str]:
    """The names of the run's failed task runs, waiting (bounded) until they are ``expected``:
    task-run states reach the server's API shortly after the flow run ends."""
    deadline = time.monotonic() + timeout
    while True:
        tasks = api("POST", "/task_runs/filter",
                    {"flow_runs": {"id": {"any_": [str(state.state_details.flow_run_id)]}}})
        failed = {t["name"].rsplit("-", 1)[0] for t in tasks if t["state_type"] == "FAILED"}
        if failed == expected or time.monotonic() > deadline:
            return failed
        time.sleep(0.5)


def run_flow(blob: str, style: str, **controls: Any) -> Any:
    return stylize.stylize_video(video=blob, style=style, return_state=True, **controls)


@pytest.fixture(scope="module")
def conditioned_style(stack_store: AzureBlobStore, stack_settings: RestyleSettings,
                      tiny_conditioned_model_path: Path) -> str:
    """A registered tiny style with a strength control (default 0.45)."""
    name = "tiny-conditioned-test"
    stack_store.upload_file(stack_settings.storage.models_container, f"{name}.safetensors",
                            tiny_conditioned_model_path)
    return name


def stats_rows(state: Any) -> dict[str, Any]:
    """The run's stats table as ``{item: value}``."""
    artifacts = api("POST", "/artifacts/filter", {"artifacts": {
        "flow_run_id": {"any_": [str(state.state_details.flow_run_id)]},
        "key": {"any_": ["stylize-stats"]}}})
    data = artifacts[0]["data"]
    return {row["item"]: row["value"]
            for row in (json.loads(data) if isinstance(data, str) else data)}


def test_a_failure_after_the_commit_never_takes_the_result_back(
    flow_env: AzureBlobStore, registered_tiny_style: str, unique: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    blob = f"after-commit-{unique}.mp4"
    output, error = stylized_names(blob, registered_tiny_style)
    flow_env.upload_file(INPUT_CONTAINER, blob, make_clip(tmp_path / "c.mp4", seconds=0.5,
                                                          fps=12))

    def broken_pictures(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("thumbnails failed")

    # The pictures and the report fail: the run still completes with its result.
    monkeypatch.setattr(stylize.grab_frames, "fn", broken_pictures)
    monkeypatch.setattr(stylize.publish_report, "fn", broken_pictures)
    state = run_flow(blob, registered_tiny_style)
    assert state.is_completed(), state.message
    assert failed_tasks(state, {"grab-frames", "publish-report"}) == {"grab-frames",
                                                                      "publish-report"}
    delivered = flow_env.get_version("stylized", output)
    with pytest.raises(BlobNotFoundError):
        flow_env.get_version("stylized", error)

    # Anything else failing after the commit fails the run, and still keeps the result.
    flow_env.upload_file(INPUT_CONTAINER, blob, make_clip(tmp_path / "d.mp4", seconds=0.5,
                                                          fps=10))

    def broken_stats(result: object) -> dict[str, Any]:
        raise RuntimeError("stats failed")

    monkeypatch.setattr(stylize.RunStats, "gpu_facts", broken_stats)
    state = run_flow(blob, registered_tiny_style)
    assert state.is_failed() and "stats failed" in state.message
    after = flow_env.get_version("stylized", output)
    assert after.etag != delivered.etag  # the new version's result, committed before the error
    assert after.metadata["restyle_source_etag"] == flow_env.get_version(
        INPUT_CONTAINER, blob).etag
    with pytest.raises(BlobNotFoundError):
        flow_env.get_version("stylized", error)


def test_a_tiny_video_is_refused_with_the_minimum_size(
    flow_env: AzureBlobStore, registered_tiny_style: str, unique: str, tmp_path: Path,
) -> None:
    blob = f"tiny-{unique}.mp4"
    flow_env.upload_file(INPUT_CONTAINER, blob, make_clip(tmp_path / "t.mp4", width=2,
                                                          height=2, seconds=0.2, fps=10))
    state = run_flow(blob, registered_tiny_style)
    assert state.is_failed()
    report_path = tmp_path / "report.json"
    flow_env.download("stylized", stylized_names(blob, registered_tiny_style)[1], report_path)
    report = json.loads(report_path.read_text())
    minimum = RestyleSettings().limits.min_side
    assert report["reason"] == (
        f"InvalidMediaError: the video's frames are 2x2; restyle needs at least {minimum} px "
        "on each side (RESTYLE_LIMITS__MIN_SIDE)")


def test_an_uploads_metadata_chooses_its_painting_and_the_result_records_it(
    flow_env: AzureBlobStore, conditioned_style: str, unique: str, tmp_path: Path,
) -> None:
    blob = f"controls-{unique}.mp4"
    output, _ = stylized_names(blob, conditioned_style)
    uploaded = flow_env.upload_file(
        INPUT_CONTAINER, blob, make_clip(tmp_path / "c.mp4", seconds=0.5, fps=10),
        metadata={"restyle_strength": "0.3", "restyle_preserve_colors": "Yes"})
    state = run_flow(blob, conditioned_style)
    assert state.is_completed(), state.message
    made = flow_env.get_version("stylized", output)
    assert {key: made.metadata[key] for key in
            ("restyle_strength", "restyle_stroke_scale", "restyle_preserve_colors")} == {
        "restyle_strength": "0.3", "restyle_stroke_scale": "1.0",
        "restyle_preserve_colors": "true"}
    assert made.metadata["restyle_source_etag"] == uploaded.etag
    rows = stats_rows(state)
    assert (rows["strength"], rows["stroke scale"], rows["original colours"]) == (
        "0.3 (blob metadata)", "1 (setting)", "yes (blob metadata)")

    # The same version with the same controls is done; a parameter asking for more paints it
    # again, and the parameter outranks the metadata.
    again = run_flow(blob, conditioned_style)
    assert again.is_completed() and again.message.startswith("already done"), again.message
    stronger = run_flow(blob, conditioned_style, strength=0.8)
    assert stronger.is_completed() and "already done" not in (stronger.message or "")
    repainted = flow_env.get_version("stylized", output)
    assert repainted.etag != made.etag
    assert repainted.metadata["restyle_strength"] == "0.8"
    assert stats_rows(stronger)["strength"] == "0.8 (parameter)"


def test_bad_painting_metadata_fails_the_run_with_a_report_and_keeps_the_input(
    flow_env: AzureBlobStore, conditioned_style: str, unique: str, tmp_path: Path,
) -> None:
    blob = f"bad-controls-{unique}.mp4"
    output, error = stylized_names(blob, conditioned_style)
    uploaded = flow_env.upload_file(
        INPUT_CONTAINER, blob, make_clip(tmp_path / "b.mp4", seconds=0.3, fps=10),
        metadata={"restyle_strenght": "0.3"})
    state = run_flow(blob, conditioned_style)
    assert state.is_failed()
    report_path = tmp_path / "report.json"
    flow_env.download("stylized", error, report_path)
    report = json.loads(report_path.read_text())
    assert report["reason"].startswith(
        "ControlsError: unknown blob metadata restyle_strenght='0.3': the painting controls are "
        "restyle_strength, ")
    assert report["source_etag"] == uploaded.etag
    assert flow_env.get_version(INPUT_CONTAINER, blob).etag == uploaded.etag
    with pytest.raises(BlobNotFoundError):
        flow_env.get_version("stylized", output)

    flow_env.upload_file(INPUT_CONTAINER, blob, make_clip(tmp_path / "b.mp4", seconds=0.3,
                                                          fps=10),
                         metadata={"restyle_stroke_scale": "9"})
    state = run_flow(blob, conditioned_style)
    assert state.is_failed() and "restyle_stroke_scale='9' is out of range: it must be within " \
        "[0.25, 4]" in state.message
