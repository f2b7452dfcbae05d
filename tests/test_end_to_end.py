"""End to end through the real stack: upload -> watcher -> automation -> flow -> result.

Needs the stack that `make test` starts (Azurite, Prefect server, process worker, watcher).
"""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tasks.events import BLOB_CREATED_EVENT
from tasks.media import probe
from tasks.settings import LimitSettings, RestyleSettings
from tasks.storage import AzureBlobStore, BlobNotFoundError
from tests.clips import make_clip
from tests.conftest import wait_for_blob

pytestmark = pytest.mark.stack

RUN_TIMEOUT = 300


def api(path: str, body: dict[str, Any]) -> Any:
    response = httpx.post(f"{os.environ['PREFECT_API_URL']}{path}", json=body, timeout=10)
    response.raise_for_status()
    return response.json()


def flow_runs_for(blob: str) -> list[dict[str, Any]]:
    runs = api("/flow_runs/filter", {"limit": 200, "sort": "EXPECTED_START_TIME_DESC"})
    return [r for r in runs if r["parameters"].get("video") == blob]


def wait_for_terminal_run(blob: str, timeout: float = RUN_TIMEOUT) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = flow_runs_for(blob)
        if runs and runs[0]["state_type"] in {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}:
            return runs[0]
        time.sleep(1)
    pytest.fail(f"no finished flow run for {blob} within {timeout}s")


def upload(store: AzureBlobStore, settings: RestyleSettings, blob: str, path: Path) -> None:
    store.upload_file(settings.storage.input_container, blob, path)


def test_upload_becomes_stylized_video_through_the_automation(
    stack_store: AzureBlobStore, stack_settings: RestyleSettings, registered_tiny_style: str,
    unique: str, tmp_path: Path,
) -> None:
    clip = make_clip(tmp_path / "in.mp4", width=96, height=64, seconds=1.5, fps=24,
                     audio_streams=2)
    blob = f"{registered_tiny_style}/e2e-{unique}.mp4"
    upload(stack_store, stack_settings, blob, clip)

    run = wait_for_terminal_run(blob)
    assert run["state_type"] == "COMPLETED", run["state"]
    assert run["name"] == f"e2e-{unique}.mp4"  # the run is named after the video

    out = tmp_path / "out.mp4"
    stack_store.download(stack_settings.storage.output_container,
                         f"{registered_tiny_style}/e2e-{unique}.mp4", out)
    source, result = probe(clip, LimitSettings()), probe(out, LimitSettings())
    assert result.video.frame_count == source.video.frame_count
    assert (result.video.display_width, result.video.display_height) == (96, 64)
    assert len(result.audio) == 2

    artifacts = api("/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [run["id"]]}}})
    kinds = {a["type"] for a in artifacts}
    assert {"progress", "table", "markdown"} <= kinds
    markdown = " ".join(a["data"] for a in artifacts if a["type"] == "markdown")
    assert "data:image/png;base64," in markdown  # the before/after frames
    assert f"stylized/{registered_tiny_style}/e2e-{unique}.mp4" in markdown  # the result link
    progress = next(a for a in artifacts if a["type"] == "progress")
    assert progress["data"] == 100.0
    table = next(a for a in artifacts if a["type"] == "table")
    table_rows = json.loads(table["data"]) if isinstance(table["data"], str) else table["data"]
    items = {row["item"]: row["value"] for row in table_rows}
    assert items["frames"] == source.video.frame_count
    assert any(key.startswith("rank ") for key in items)


def test_watcher_event_reaches_prefect_within_two_seconds(
    stack_store: AzureBlobStore, stack_settings: RestyleSettings, unique: str, tmp_path: Path,
) -> None:
    body = tmp_path / "probe.txt"
    body.write_text("not a video: only the event's latency is measured here")
    container = "probe"  # watched by the test stack's watcher (Makefile), triggers nothing
    if container not in stack_settings.watcher.containers:
        pytest.skip("the stack's watcher does not watch 'probe': run through `make test`")
    stack_store.ensure_containers([container])
    blob = f"latency-{unique}.txt"
    stack_store.upload_file(container, blob, body)
    uploaded = datetime.now(UTC)
    # The server stamps `received` when the event arrives; it is stored a little later, so
    # poll for it generously and measure with the server's own stamp.
    events: list[dict[str, Any]] = []
    deadline = time.monotonic() + 30
    while not events and time.monotonic() < deadline:
        events = api("/events/filter", {"filter": {
            "event": {"name": [BLOB_CREATED_EVENT]},
            "resource": {"id": [f"azure.storage.devstoreaccount1.{container}/{blob}"]},
        }, "limit": 5})["events"]
        time.sleep(0.2)
    assert len(events) == 1, "the watcher announced the upload not exactly once"
    received = datetime.fromisoformat(events[0]["received"])
    latency = (received - uploaded).total_seconds()
    assert latency <= 2.0, f"event reached Prefect {latency:.2f}s after the upload"


def test_bad_upload_gets_error_report_and_no_video(
    stack_store: AzureBlobStore, stack_settings: RestyleSettings, registered_tiny_style: str,
    unique: str, tmp_path: Path,
) -> None:
    text = tmp_path / "notes.mp4"
    text.write_text("these are meeting notes, not a video\n" * 20)
    blob = f"{registered_tiny_style}/bad-{unique}.mp4"
    upload(stack_store, stack_settings, blob, text)

    out = stack_settings.storage.output_container
    wait_for_blob(stack_store, out, f"{registered_tiny_style}/bad-{unique}.error.json", RUN_TIMEOUT)
    report_path = tmp_path / "report.json"
    stack_store.download(out, f"{registered_tiny_style}/bad-{unique}.error.json", report_path)
    report = json.loads(report_path.read_text())
    assert "InvalidMediaError" in report["reason"]
    assert report["flow_run_id"] and report["time"]
    with pytest.raises(BlobNotFoundError):
        stack_store.get_version(out, f"{registered_tiny_style}/bad-{unique}.mp4")
    tags = stack_store.get_tags(stack_settings.storage.input_container, blob)
    assert tags == {"restyle-status": "failed"}
    run = wait_for_terminal_run(blob)
    assert run["state_type"] == "FAILED"
    assert report["reason"].split(":")[0] in run["state"]["message"]


def test_concurrent_uploads_each_run_exactly_once(
    stack_store: AzureBlobStore, stack_settings: RestyleSettings, registered_tiny_style: str,
    unique: str, tmp_path: Path,
) -> None:
    clip = make_clip(tmp_path / "c.mp4", width=64, height=48, seconds=0.5, fps=12,
                     audio_streams=1)
    blobs = [f"{registered_tiny_style}/many-{unique}-{i}.mp4" for i in range(3)]
    for blob in blobs:
        upload(stack_store, stack_settings, blob, clip)
    for blob in blobs:
        assert wait_for_terminal_run(blob)["state_type"] == "COMPLETED"
    time.sleep(3)  # a duplicate trigger would have created its run by now
    assert [len(flow_runs_for(blob)) for blob in blobs] == [1, 1, 1]
