"""End to end through the real stack: upload -> watcher -> automation -> flow -> result.

Needs the stack that `make test` starts (Azurite, Prefect server, process worker, watcher).
Every wait is on a condition with a bound; none sleeps a fixed time and then asserts.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from deployments.azurite_watcher import prefect_http_sink
from deployments.post_deploy import ZOMBIE_AUTOMATION
from tasks.events import BLOB_CREATED_EVENT
from tasks.media import extract_frame_png, probe
from tasks.naming import stylized_names
from tasks.outputs import SourceStamp
from tasks.recovery import CRASH_RETRY_TAG
from tasks.settings import LimitSettings, RestyleSettings
from tasks.storage import AzureBlobStore, BlobNotFoundError
from tests.clips import make_clip
from tests.conftest import wait_for_blob
from tests.stack_api import (
    FINAL_STATES,
    api,
    flow_runs,
    wait_for_final_run,
    wait_for_state,
    wait_until,
)

pytestmark = [pytest.mark.stack, pytest.mark.slow]

RUN_TIMEOUT = 300
REPO = Path(__file__).resolve().parent.parent


def upload(store: AzureBlobStore, settings: RestyleSettings, blob: str, path: Path) -> str:
    """Upload ``path`` as input ``blob``; returns the new version's etag."""
    return store.upload_file(settings.storage.input_container, blob, path).etag


def video_runs(blob: str) -> list[dict[str, Any]]:
    """stylize-video runs of input ``blob`` (the trigger names it with its container)."""
    return flow_runs("video", f"videos/{blob}")


def wait_for_video_run(blob: str, timeout: float = RUN_TIMEOUT) -> dict[str, Any]:
    return wait_for_final_run("video", f"videos/{blob}", timeout)


def all_final(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``runs`` if there are some and all are in a final state, else an empty list."""
    return runs if runs and all(r["state_type"] in FINAL_STATES for r in runs) else []


def output_of(store: AzureBlobStore, blob: str, style: str, dest: Path) -> tuple[Path, Any]:
    """Download the result of ``blob`` in ``style``; returns the file and its version."""
    name, _ = stylized_names(blob, style)
    return dest, store.download("stylized", name, dest)


def frame_array(video: Path, index: int, png: Path) -> np.ndarray:
    extract_frame_png(video, index, png, max_width=480)
    return np.asarray(Image.open(png).convert("RGB"), dtype=np.int16)


def task_running(flow_run_id: str, name: str) -> bool:
    runs = api("POST", "/task_runs/filter",
               {"flow_runs": {"id": {"any_": [flow_run_id]}}, "limit": 50})
    return any(r["name"].startswith(name) and r["state_type"] == "RUNNING" for r in runs)


def stack_command(*args: str) -> None:
    subprocess.run([str(REPO / "tools" / "stack.sh"), *args], check=True, cwd=REPO,
                   capture_output=True, timeout=300)


def test_upload_becomes_stylized_video_through_the_automation(
    stack_store: AzureBlobStore, stack_settings: RestyleSettings, registered_tiny_style: str,
    unique: str, tmp_path: Path,
) -> None:
    clip = make_clip(tmp_path / "in.mp4", width=96, height=64, seconds=1.5, fps=24,
                     audio_streams=2)
    blob = f"{registered_tiny_style}/e2e-{unique}.mp4"
    etag = upload(stack_store, stack_settings, blob, clip)

    run = wait_for_video_run(blob)
    assert run["state_type"] == "COMPLETED", run["state"]
    assert run["name"] == f"e2e-{unique}.mp4"  # the run is named after the video

    out, version = output_of(stack_store, blob, registered_tiny_style, tmp_path / "out.mp4")
    assert SourceStamp.read(version.metadata) == SourceStamp.read(
        {"restyle_source": f"videos/{blob}", "restyle_source_etag": etag})
    assert version.metadata["restyle_flow_run_id"] == run["id"]
    source, result = probe(clip, LimitSettings()), probe(out, LimitSettings())
    assert result.video.frame_count == source.video.frame_count
    assert (result.video.display_width, result.video.display_height) == (96, 64)
    assert len(result.audio) == 2
    # Stylized, not copied: the same frame differs clearly from the input's.
    middle = source.video.frame_count // 2
    before = frame_array(clip, middle, tmp_path / "before.png")
    after = frame_array(out, middle, tmp_path / "after.png")
    assert before.shape == after.shape
    assert np.abs(before - after).mean() > 20, "the output's pixels are the input's"

    artifacts = api("POST", "/artifacts/filter",
                    {"artifacts": {"flow_run_id": {"any_": [run["id"]]}}})
    kinds = {a["type"] for a in artifacts}
    assert {"progress", "table", "markdown"} <= kinds
    markdown = " ".join(a["data"] for a in artifacts if a["type"] == "markdown")
    assert "data:image/png;base64," in markdown  # the before/after frames
    assert f"stylized/{stylized_names(blob, registered_tiny_style)[0]}" in markdown
    progress = next(a for a in artifacts if a["type"] == "progress")
    assert progress["data"] == 100.0
    table = next(a for a in artifacts if a["type"] == "table")
    table_rows = json.loads(table["data"]) if isinstance(table["data"], str) else table["data"]
    items = {row["item"]: row["value"] for row in table_rows}
    assert items["frames"] == source.video.frame_count
    assert items["GPU job attempts"] >= 1
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
    events = wait_until(lambda: api("POST", "/events/filter", {"filter": {
        "event": {"name": [BLOB_CREATED_EVENT]},
        "resource": {"id": [f"azure.storage.devstoreaccount1.{container}/{blob}"]},
    }, "limit": 5})["events"], 30, "the watcher's event", poll=0.2)
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

    output, error = stylized_names(blob, registered_tiny_style)
    wait_for_blob(stack_store, "stylized", error, RUN_TIMEOUT)
    report_path = tmp_path / "report.json"
    stack_store.download("stylized", error, report_path)
    report = json.loads(report_path.read_text())
    assert report["reason"].startswith("InvalidMediaError: ")
    assert f"videos/{blob}" in report["reason"]  # named by its blob, not its local copy
    assert report["flow_run_id"] and report["time"] and report["source_etag"]
    with pytest.raises(BlobNotFoundError):
        stack_store.get_version("stylized", output)
    tags = stack_store.get_tags(stack_settings.storage.input_container, blob)
    assert tags == {"restyle-status": "failed"}
    run = wait_for_video_run(blob)
    assert run["state_type"] == "FAILED"
    assert report["reason"].split(":")[0] in run["state"]["message"]


def test_concurrent_uploads_each_stylize_exactly_once(
    stack_store: AzureBlobStore, stack_settings: RestyleSettings, registered_tiny_style: str,
    unique: str, tmp_path: Path,
) -> None:
    clip = make_clip(tmp_path / "c.mp4", width=64, height=48, seconds=0.5, fps=12,
                     audio_streams=1)
    blobs = [f"{registered_tiny_style}/many-{unique}-{i}.mp4" for i in range(3)]
    for blob in blobs:
        upload(stack_store, stack_settings, blob, clip)
    for blob in blobs:
        run = wait_for_video_run(blob)
        assert run["state_type"] == "COMPLETED", run["state"]
        # Exactly once in effect: the result names the one run that made it, and any other run
        # of this version (a redelivered event) found it done and did no work.
        _, version = output_of(stack_store, blob, registered_tiny_style, tmp_path / "o.mp4")
        runs = wait_until(lambda b=blob: all_final(video_runs(b)), RUN_TIMEOUT, f"runs of {blob}")
        makers = [r for r in runs if not (r["state"]["message"] or "").startswith("already done")]
        assert [r["id"] for r in makers] == [version.metadata["restyle_flow_run_id"]]


def test_extension_twins_keep_their_own_outputs(
    stack_store: AzureBlobStore, stack_settings: RestyleSettings, registered_tiny_style: str,
    unique: str, tmp_path: Path,
) -> None:
    """``a/b.mp4`` and ``a/b.mov`` both get results; a failure of one leaves the other's."""
    style = registered_tiny_style
    mp4 = f"{style}/twin-{unique}/b.mp4"
    mov = f"{style}/twin-{unique}/b.mov"
    upload(stack_store, stack_settings, mp4, make_clip(tmp_path / "b.mp4", seconds=0.5, fps=12))
    upload(stack_store, stack_settings, mov, make_clip(tmp_path / "b.mov", seconds=1.0, fps=12))
    for blob in (mp4, mov):
        assert wait_for_video_run(blob)["state_type"] == "COMPLETED"
    _, mp4_result = output_of(stack_store, mp4, style, tmp_path / "o1.mp4")
    _, mov_result = output_of(stack_store, mov, style, tmp_path / "o2.mp4")
    assert mp4_result.blob != mov_result.blob

    bad = tmp_path / "bad.mov"
    bad.write_text("not a video\n" * 50)
    upload(stack_store, stack_settings, mov, bad)
    wait_until(lambda: [r for r in video_runs(mov) if r["state_type"] == "FAILED"],
               RUN_TIMEOUT, "the failed run of the bad .mov")
    wait_for_blob(stack_store, "stylized", stylized_names(mov, style)[1], RUN_TIMEOUT)
    assert stack_store.get_version("stylized", mp4_result.blob).etag == mp4_result.etag
    # The .mov's own result of its older version goes: it no longer matches its input.
    wait_until(lambda: not any(v.blob == mov_result.blob
                               for v in stack_store.list_versions("stylized")),
               60, f"removal of the stale {mov_result.blob}")


def test_a_newer_version_wins_over_a_slower_older_run(
    stack_store: AzureBlobStore, stack_settings: RestyleSettings, registered_tiny_style: str,
    unique: str, tmp_path: Path,
) -> None:
    blob = f"{registered_tiny_style}/versions-{unique}.mp4"
    long = make_clip(tmp_path / "v1.mp4", width=160, height=120, seconds=12, fps=25)
    short = make_clip(tmp_path / "v2.mp4", width=64, height=48, seconds=1, fps=25)
    v1 = upload(stack_store, stack_settings, blob, long)
    v1_run = wait_until(lambda: [r for r in video_runs(blob) if r["parameters"]["etag"] == v1],
                        120, "the run of version 1")[0]
    wait_until(lambda: task_running(v1_run["id"], "run-gpu-job"), RUN_TIMEOUT,
               "version 1's GPU job")
    v2 = upload(stack_store, stack_settings, blob, short)

    old = wait_for_state(v1_run["id"], FINAL_STATES, RUN_TIMEOUT)
    assert old["state_type"] == "COMPLETED"
    assert old["state"]["message"].startswith(f"superseded by version {v2}")
    new = wait_until(lambda: [r for r in video_runs(blob) if r["parameters"]["etag"] == v2
                              and r["state_type"] in FINAL_STATES], RUN_TIMEOUT,
                     "the run of version 2")[0]
    assert new["state_type"] == "COMPLETED", new["state"]
    out, version = output_of(stack_store, blob, registered_tiny_style, tmp_path / "out.mp4")
    assert version.metadata["restyle_source_etag"] == v2
    assert probe(out, LimitSettings()).video.frame_count == 25


def test_an_old_event_resent_after_a_server_restart_does_no_second_stylization(
    stack_store: AzureBlobStore, stack_settings: RestyleSettings, registered_tiny_style: str,
    unique: str, tmp_path: Path,
) -> None:
    blob = f"{registered_tiny_style}/resent-{unique}.mp4"
    upload(stack_store, stack_settings, blob,
           make_clip(tmp_path / "c.mp4", seconds=0.5, fps=12))
    first = wait_for_video_run(blob)
    assert first["state_type"] == "COMPLETED"
    _, before = output_of(stack_store, blob, registered_tiny_style, tmp_path / "o.mp4")
    (event,) = api("POST", "/events/filter", {"filter": {
        "event": {"name": [BLOB_CREATED_EVENT]},
        "resource": {"id": [f"azure.storage.devstoreaccount1.videos/{blob}"]},
    }, "limit": 5})["events"]

    stack_command("restart", "prefect-server")  # Prefect's seen-event cache is in memory
    sink = prefect_http_sink(os.environ["PREFECT_API_URL"])
    sink([{"event": event["event"], "id": event["id"], "resource": event["resource"],
           "payload": event["payload"], "occurred": event["occurred"]}])

    second = wait_until(lambda: [r for r in video_runs(blob) if r["id"] != first["id"]
                                 and r["state_type"] in FINAL_STATES], RUN_TIMEOUT,
                        "the run of the re-sent event")[0]
    assert second["state_type"] == "COMPLETED"
    assert second["state"]["message"].startswith("already done")
    _, after = output_of(stack_store, blob, registered_tiny_style, tmp_path / "o.mp4")
    assert after.etag == before.etag
    assert after.metadata["restyle_flow_run_id"] == first["id"]


def rank_processes(work_folder: Path) -> list[int]:
    """Processes of a GPU job reading ``work_folder`` (its ranks and mpiexec)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if str(work_folder) in cmdline:
            found.append(int(entry.name))
    return found


def test_a_killed_run_is_crashed_reported_cleaned_and_retried(
    stack_store: AzureBlobStore, stack_settings: RestyleSettings, registered_tiny_style: str,
    unique: str, tmp_path: Path,
) -> None:
    """SIGKILL the worker and the flow-run process mid-job, as a lost machine would."""
    stack = Path(os.environ["RESTYLE_STACK_DIR"])
    blob = f"{registered_tiny_style}/killed-{unique}.mp4"
    # Long enough that ranks left running would still be at work when they are looked for.
    clip = make_clip(tmp_path / "k.mp4", width=160, height=120, seconds=30, fps=25)
    pool = api("GET", "/work_pools/restyle-cpu")
    # One slot: the recovery and the retry can only run once the crashed run gave its back.
    api("PATCH", "/work_pools/restyle-cpu", {"concurrency_limit": 1})
    try:
        upload(stack_store, stack_settings, blob, clip)
        run = wait_until(lambda: video_runs(blob), 120, "the run")[0]
        wait_until(lambda: task_running(run["id"], "run-gpu-job"), RUN_TIMEOUT, "the GPU job")
        pid = int(str(api("GET", f"/flow_runs/{run['id']}")["infrastructure_pid"]).split(":")[-1])
        work = stack_settings.work_dir / run["id"]
        assert rank_processes(work), "the GPU job's ranks were not found before the kill"
        os.kill(int((stack / "pids" / "worker").read_text()), signal.SIGKILL)
        os.kill(pid, signal.SIGKILL)
        stack_command("restart", "worker")
        wait_until(lambda: not rank_processes(work), 5, "the killed run's ranks to end",
                   poll=0.2)

        # No worker saw it die: the missed heartbeats mark it Crashed.
        crashed = wait_for_state(run["id"], FINAL_STATES, 240)
        assert crashed["state_type"] == "CRASHED"
        assert "no heartbeat" in crashed["state"]["message"]

        retry = wait_until(lambda: [r for r in video_runs(blob) if CRASH_RETRY_TAG in r["tags"]
                                    and r["state_type"] in FINAL_STATES], RUN_TIMEOUT * 2,
                           "the automatic retry")[0]
        assert retry["state_type"] == "COMPLETED", retry["state"]
        _, version = output_of(stack_store, blob, registered_tiny_style, tmp_path / "o.mp4")
        assert version.metadata["restyle_flow_run_id"] == retry["id"]
        recovery = wait_until(lambda: [r for r in flow_runs("crashed_run",
                                                            f"prefect.flow-run.{run['id']}")
                                       if r["state_type"] in FINAL_STATES], 60, "the recovery")
        message = recovery[0]["state"]["message"]
        assert stylized_names(blob, registered_tiny_style)[1] in message  # the crash's report
        assert "retried once" in message
        assert not work.exists()  # its leftover work folder was collected
        # The retry succeeded, so the crash's report is gone again.
        with pytest.raises(BlobNotFoundError):
            stack_store.get_version("stylized", stylized_names(blob, registered_tiny_style)[1])
    finally:
        api("PATCH", "/work_pools/restyle-cpu", {"concurrency_limit": pool["concurrency_limit"]})


def test_automations_have_names_a_user_understands() -> None:
    names = {a["name"] for a in api("POST", "/automations/filter", {})}
    assert {"Stylize each new video version", "Train a style from each new style image",
            "Recover each crashed restyle run (report, clean up, retry once)",
            ZOMBIE_AUTOMATION} <= names
    assert not [name for name in names if "__automation_" in name]
