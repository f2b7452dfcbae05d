"""Failure reports and the flows' state hooks, on an in-memory store."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from prefect.states import Completed, Crashed, Failed

from tasks import failures
from tasks.compute.base import GpuJobError
from tasks.naming import BlobRef
from tasks.outputs import SourceStamp
from tasks.run_context import RunContext, WorkDir
from tasks.settings import RestyleSettings
from tasks.storage import BlobNotFoundError
from tests.memory_store import MemoryBlobStore

RUN_ID = "0b7c6f9e-1d2a-4f3b-9c8d-7e6f5a4b3c2d"


@pytest.fixture
def settings(tmp_path: Path) -> RestyleSettings:
    return RestyleSettings(default_style="udnie", work_dir=tmp_path / "work")


@pytest.fixture
def store(settings: RestyleSettings) -> MemoryBlobStore:
    store = MemoryBlobStore()
    storage = settings.storage
    store.ensure_containers([storage.input_container, storage.output_container,
                             storage.styles_container, storage.models_container])
    return store


@pytest.fixture
def context(settings: RestyleSettings, store: MemoryBlobStore, monkeypatch: pytest.MonkeyPatch
            ) -> RunContext:
    ctx = RunContext(settings, store, RUN_ID, WorkDir.of_run(settings.work_dir, RUN_ID))
    monkeypatch.setattr(failures, "run_context", lambda run_id: ctx)
    monkeypatch.setattr(failures, "flow_run_logger",
                        lambda *args: logging.getLogger("test.hooks"))
    return ctx


def report_of(store: MemoryBlobStore, blob: str) -> dict[str, Any]:
    return json.loads(store.read_bytes("stylized", blob))


def failed(error: BaseException) -> Any:
    return Failed(data=error, message=f"Flow run encountered an exception: {error}")


def hook_args(parameters: dict[str, Any], flow: str = "stylize-video") -> tuple[Any, Any]:
    return SimpleNamespace(name=flow), SimpleNamespace(id=RUN_ID, parameters=parameters)


def test_failure_hook_writes_the_report_with_the_jobs_log_tail_and_clears_the_work_folder(
    context: RunContext, store: MemoryBlobStore
) -> None:
    version = store.put_bytes("videos", "a/b.mov", b"v1")
    context.work.write_record({"source_etag": version.etag})
    (context.work.gpu_out / "chunks").mkdir(parents=True)
    error = GpuJobError("gpu.stylize exited with status 1 under mpiexec",
                        "rank 0: frame too small\n")
    flow, run = hook_args({"video": "a/b.mov", "style": "udnie"})
    failures.FLOW_HOOKS["on_failure"][0](flow, run, failed(error))

    report = report_of(store, "a/b.mov.udnie.error.json")
    assert report["reason"] == "GpuJobError: gpu.stylize exited with status 1 under mpiexec"
    assert report["log_tail"] == "rank 0: frame too small\n"
    assert report["flow_run_id"] == RUN_ID and report["source_etag"] == version.etag
    assert report["video"] == "a/b.mov" and report["style"] == "udnie"
    assert store.get_tags("videos", "a/b.mov") == {"restyle-status": "failed"}
    assert not context.work.path.exists()


def test_a_failure_after_the_commit_keeps_the_result(
    context: RunContext, store: MemoryBlobStore
) -> None:
    """The run committed its result, then failed (pictures, artifacts): the result stays."""
    version = store.put_bytes("videos", "a/b.mp4", b"v1")
    context.work.write_record({"source_etag": version.etag})
    stamp = SourceStamp(BlobRef("videos", "a/b.mp4"), version.etag)
    store.put_bytes("stylized", "a/b.mp4.udnie.mp4", b"result", stamp.metadata("udnie", RUN_ID))
    flow, run = hook_args({"video": "a/b.mp4", "style": "udnie"})
    failures.FLOW_HOOKS["on_failure"][0](flow, run, failed(RuntimeError("thumbnail failed")))
    assert store.read_bytes("stylized", "a/b.mp4.udnie.mp4") == b"result"
    with pytest.raises(BlobNotFoundError):  # and no report beside the delivered result
        store.get_version("stylized", "a/b.mp4.udnie.error.json")
    assert store.get_tags("videos", "a/b.mp4") == {}


def test_a_failure_of_a_superseded_version_writes_no_report(
    context: RunContext, store: MemoryBlobStore
) -> None:
    old = store.put_bytes("videos", "a/b.mp4", b"v1")
    store.put_bytes("videos", "a/b.mp4", b"v2")
    context.work.write_record({"source_etag": old.etag})
    flow, run = hook_args({"video": "a/b.mp4", "style": "udnie"})
    failures.FLOW_HOOKS["on_failure"][0](flow, run, failed(ValueError("old version was bad")))
    with pytest.raises(BlobNotFoundError):
        store.get_version("stylized", "a/b.mp4.udnie.error.json")
    assert store.get_tags("videos", "a/b.mp4") == {}


def test_a_refused_name_gets_its_report_in_the_rejected_folder(
    context: RunContext, store: MemoryBlobStore
) -> None:
    flow, run = hook_args({"video": "a\nforged log line.mp4", "style": "auto"})
    failures.FLOW_HOOKS["on_failure"][0](flow, run, failed(ValueError("control characters")))
    (blob,) = [v.blob for v in store.list_versions("stylized")]
    assert blob.startswith("_rejected/") and blob.endswith(".error.json")
    assert report_of(store, blob)["video"] == "a\nforged log line.mp4"


def test_a_crash_gets_the_same_report_from_its_state_message(
    context: RunContext, store: MemoryBlobStore
) -> None:
    store.put_bytes("styles", "wave.png", b"png")
    flow, run = hook_args({"style_image": "wave.png"}, flow="train-style")
    failures.FLOW_HOOKS["on_crashed"][0](flow, run, Crashed(message="process exited -9"))
    report = json.loads(store.read_bytes("models", "wave.error.json"))
    assert report["reason"] == "CrashedRun: process exited -9"  # as the recovery writes it
    assert report["style_image"] == "wave.png" and report["name"] == "wave"


def test_completion_and_cancellation_only_clear_the_work_folder(
    context: RunContext, store: MemoryBlobStore
) -> None:
    for hook in ("on_completion", "on_cancellation"):
        context.work.write_record({"source_etag": "0x1"})
        flow, run = hook_args({"video": "a.mp4"})
        failures.FLOW_HOOKS[hook][0](flow, run, Completed())
        assert not context.work.path.exists()
    assert list(store.list_versions("stylized")) == []


def test_a_hook_that_cannot_report_still_clears_the_folder_and_never_raises(
    context: RunContext, store: MemoryBlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any) -> None:
        raise ConnectionError("storage is down")

    monkeypatch.setattr(store, "upload_json", broken)
    context.work.write_record({})
    flow, run = hook_args({"video": "a.mp4"})
    failures.FLOW_HOOKS["on_failure"][0](flow, run, failed(ValueError("x")))
    assert not context.work.path.exists()


def test_state_reason_prefers_the_exception() -> None:
    error = GpuJobError("boom", "tail")
    assert failures.state_reason(failed(error)) == ("GpuJobError: boom", "tail")
    assert failures.state_reason(Crashed(message="gone")) == ("CrashedRun: gone", "")
    assert failures.state_reason(Completed(message="odd")) == ("Completed: odd", "")


class _NoTagRoleStore(MemoryBlobStore):
    """A store whose identity lacks the tags/write role: Azure answers 403 to set_tags."""

    def set_tags(self, container: str, blob: str, tags: dict[str, str]) -> None:
        from azure.core.exceptions import HttpResponseError

        error = HttpResponseError("This request is not authorized to perform this operation")
        error.status_code = 403
        raise error


def test_a_refused_tag_does_not_replace_the_failures_reason(
        caplog: pytest.LogCaptureFixture) -> None:
    store = _NoTagRoleStore()
    store.ensure_containers(["videos", "stylized"])
    target = failures.FailureTarget(error=BlobRef("stylized", "a/b.error.json"),
                                    source=BlobRef("videos", "a/b.mp4"))
    report = {"reason": "GpuJobError: Azure ML job x failed: CUDA out of memory"}
    with caplog.at_level(logging.WARNING):
        assert failures.write_failure_report(store, target, report) is True
    written = json.loads(store.read_bytes("stylized", "a/b.error.json"))
    assert written["reason"] == report["reason"]
    assert "could not tag 'videos/a/b.mp4' as failed: HttpResponseError" in caplog.text
