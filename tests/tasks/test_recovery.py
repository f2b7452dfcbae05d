"""Crash recovery's rules, the work folder's layout and collection, the zombie automation."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from deployments.post_deploy import ZOMBIE_AUTOMATION, zombie_automation
from tasks.recovery import CRASH_RETRY_TAG, CrashedFlowRun, crashed_run_id, plan_recovery
from tasks.run_context import WorkDir, collect_work_dirs


def crashed(**changes: object) -> CrashedFlowRun:
    fields = {"id": str(uuid.uuid4()), "name": "clip.mp4", "flow_name": "stylize-video",
              "state_type": "CRASHED", "message": "exited -9", "deployment_id": str(uuid.uuid4()),
              "parameters": {"video": "videos/clip.mp4"}, "tags": ("restyle",)}
    return CrashedFlowRun(**{**fields, **changes})  # type: ignore[arg-type]


def test_a_crashed_run_is_recovered_and_retried_once() -> None:
    plan = plan_recovery(crashed())
    assert (plan.recover, plan.retry) == (True, True)
    retry = plan_recovery(crashed(tags=("restyle", CRASH_RETRY_TAG)))
    assert (retry.recover, retry.retry) == (True, False)
    assert "already the automatic retry" in retry.reason
    assert plan_recovery(crashed(deployment_id=None)).retry is False


@pytest.mark.parametrize(("changes", "reason"), [
    ({"state_type": "COMPLETED"}, "not crashed"),
    ({"flow_name": "recover-crashed-run"}, "not a restyle flow"),
])
def test_other_runs_are_left_alone(changes: dict[str, object], reason: str) -> None:
    plan = plan_recovery(crashed(**changes))
    assert not plan.recover and not plan.retry and reason in plan.reason


def test_the_crashed_run_is_named_by_its_event_resource_or_its_id() -> None:
    run_id = str(uuid.uuid4())
    assert crashed_run_id(f"prefect.flow-run.{run_id}") == run_id
    assert crashed_run_id(run_id) == run_id
    with pytest.raises(ValueError):
        crashed_run_id("prefect.flow-run.not-an-id")


def test_work_dir_names_every_folder_and_keeps_a_record(tmp_path: Path) -> None:
    work = WorkDir.of_run(tmp_path, "run-1")
    assert work.run_id == "run-1"
    assert work.source("a/" + "x" * 900 + ".mov").parent == tmp_path / "run-1" / "source"
    assert len(work.source("a/" + "x" * 900 + ".mov").name) == 20
    assert {work.gpu_in.name, work.gpu_out.name, work.audio.name} == {"gpu-in", "gpu-out", "audio"}
    assert work.read_record() == {}
    work.write_record({"source": "videos/a.mp4"})
    work.write_record({"source_etag": "0x1"})
    assert work.read_record() == {"source": "videos/a.mp4", "source_etag": "0x1"}
    work.remove()
    assert not work.path.exists()


def test_only_finished_runs_folders_are_collected(tmp_path: Path) -> None:
    finished, running = str(uuid.uuid4()), str(uuid.uuid4())
    for name in (finished, running, "not-a-run"):
        (tmp_path / name / "gpu-out").mkdir(parents=True)
    removed = collect_work_dirs(tmp_path, lambda run_id: run_id == finished)
    assert removed == [finished]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([running, "not-a-run"])
    assert collect_work_dirs(tmp_path / "missing", lambda run_id: True) == []


def test_zombie_automation_follows_prefects_documented_shape() -> None:
    automation = zombie_automation(heartbeat_seconds=30)
    trigger = automation.trigger
    assert automation.name == ZOMBIE_AUTOMATION
    assert trigger.posture == "Proactive" and trigger.within.total_seconds() == 90
    assert trigger.after == {"prefect.flow-run.heartbeat"}
    assert trigger.expect == {"prefect.flow-run.heartbeat", "prefect.flow-run.Completed",
                              "prefect.flow-run.Failed", "prefect.flow-run.Cancelled",
                              "prefect.flow-run.Crashed"}
    assert trigger.for_each == {"prefect.resource.id"}
    (action,) = automation.actions
    assert action.type == "change-flow-run-state" and action.state == "CRASHED"
