"""The result rules: idempotent, latest version wins without lost updates, only its own."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tasks import outputs
from tasks.controls import Chosen, ControlSource, RunControls
from tasks.naming import BlobRef
from tasks.outputs import (
    OutputOwnershipError,
    SourceStamp,
    already_done,
    commit_output,
    remove_stale_output,
    still_current,
)
from tasks.storage import BlobConditionError, BlobNotFoundError
from tests.memory_store import MemoryBlobStore

SOURCE = BlobRef("videos", "a/b.mp4")
OUTPUT = BlobRef("stylized", "a/b.mp4.udnie.mp4")
DEFAULTS = RunControls(Chosen(0.45, ControlSource.STYLE_DEFAULT),
                       Chosen(1.0, ControlSource.SETTING), Chosen(False, ControlSource.SETTING))


@pytest.fixture
def store() -> MemoryBlobStore:
    return MemoryBlobStore()


def result_file(tmp_path: Path, body: bytes) -> Path:
    path = tmp_path / f"result-{body.decode()}.mp4"
    path.write_bytes(body)
    return path


def commit(store: MemoryBlobStore, tmp_path: Path, etag: str, body: bytes, run: str = "run",
           controls: RunControls = DEFAULTS):
    return commit_output(store, OUTPUT, result_file(tmp_path, body), SourceStamp(SOURCE, etag),
                         "udnie", run, controls)


def test_stamp_round_trips_any_blob_name_through_ascii_metadata() -> None:
    stamp = SourceStamp(BlobRef("videos", "été/a b%2F.mp4"), "0x1")
    metadata = stamp.metadata("udnie", "run-1")
    assert all(value.isascii() for value in metadata.values())
    assert SourceStamp.read(metadata) == stamp
    assert SourceStamp.read({}) is None


def test_commit_records_the_source_and_the_same_version_is_then_already_done(
    store: MemoryBlobStore, tmp_path: Path
) -> None:
    v1 = store.put_bytes(SOURCE.container, SOURCE.blob, b"v1")
    assert already_done(store, OUTPUT, v1) is None
    outcome = commit(store, tmp_path, v1.etag, b"r1", run="run-1")
    assert outcome.committed and outcome.superseded_by is None
    metadata = store.get_version(OUTPUT.container, OUTPUT.blob).metadata
    assert SourceStamp.read(metadata) == SourceStamp(SOURCE, v1.etag)
    assert metadata["restyle_flow_run_id"] == "run-1"
    assert already_done(store, OUTPUT, v1) is not None
    v2 = store.put_bytes(SOURCE.container, SOURCE.blob, b"v2")
    assert already_done(store, OUTPUT, v2) is None  # a new version is not done yet


def test_the_result_records_its_controls_and_other_controls_paint_the_version_again(
    store: MemoryBlobStore, tmp_path: Path
) -> None:
    v1 = store.put_bytes(SOURCE.container, SOURCE.blob, b"v1")
    assert commit(store, tmp_path, v1.etag, b"r1").committed
    metadata = store.get_version(OUTPUT.container, OUTPUT.blob).metadata
    assert {key: metadata[key] for key in DEFAULTS.metadata()} == {
        "restyle_strength": "0.45", "restyle_stroke_scale": "1.0",
        "restyle_preserve_colors": "false"}
    assert SourceStamp.read(metadata) == SourceStamp(SOURCE, v1.etag)  # the stamp stays

    assert already_done(store, OUTPUT, v1, DEFAULTS) is not None
    stronger = RunControls(Chosen(0.8, ControlSource.PARAMETER), DEFAULTS.stroke_scale,
                           DEFAULTS.preserve_colors)
    assert already_done(store, OUTPUT, v1, stronger) is None
    assert already_done(store, OUTPUT, v1) is not None  # without controls: the version only
    assert commit(store, tmp_path, v1.etag, b"r1-strong", controls=stronger).committed
    assert store.get_version(OUTPUT.container, OUTPUT.blob).metadata["restyle_strength"] == "0.8"
    assert already_done(store, OUTPUT, v1, stronger) is not None
    assert already_done(store, OUTPUT, v1, DEFAULTS) is None

    # A re-upload whose metadata asks for other controls is a new version: it is painted again.
    v2 = store.put_bytes(SOURCE.container, SOURCE.blob, b"v1", {"restyle_strength": "0.8"})
    assert already_done(store, OUTPUT, v2, stronger) is None


def test_a_result_from_before_controls_were_recorded_is_painted_again(
    store: MemoryBlobStore
) -> None:
    v1 = store.put_bytes(SOURCE.container, SOURCE.blob, b"v1")
    store.put_bytes(OUTPUT.container, OUTPUT.blob, b"old",
                    SourceStamp(SOURCE, v1.etag).metadata("udnie", "r"))
    assert already_done(store, OUTPUT, v1) is not None
    assert already_done(store, OUTPUT, v1, DEFAULTS) is None


def test_a_run_of_an_older_version_never_replaces_the_newer_result(
    store: MemoryBlobStore, tmp_path: Path
) -> None:
    v1 = store.put_bytes(SOURCE.container, SOURCE.blob, b"v1")
    v2 = store.put_bytes(SOURCE.container, SOURCE.blob, b"v2")
    assert commit(store, tmp_path, v2.etag, b"r2").committed
    late = commit(store, tmp_path, v1.etag, b"r1")  # v1's run finishes last
    assert late == type(late)(superseded_by=v2.etag)
    assert store.read_bytes(OUTPUT.container, OUTPUT.blob) == b"r2"


def test_a_run_whose_input_changed_before_its_commit_writes_nothing(
    store: MemoryBlobStore, tmp_path: Path
) -> None:
    v1 = store.put_bytes(SOURCE.container, SOURCE.blob, b"v1")
    v2 = store.put_bytes(SOURCE.container, SOURCE.blob, b"v2")
    assert commit(store, tmp_path, v1.etag, b"r1").superseded_by == v2.etag
    assert list(store.list_versions(OUTPUT.container)) == []
    store.delete(SOURCE.container, SOURCE.blob)
    deleted = commit(store, tmp_path, v2.etag, b"r2")
    assert not deleted.committed and deleted.superseded_by is None


def test_a_result_written_between_the_check_and_the_write_is_not_overwritten_blindly(
    store: MemoryBlobStore, tmp_path: Path
) -> None:
    """The v2 run checked its source, then v3 arrived and v3's run committed before v2 wrote:
    v2's conditional write fails, it looks again, sees v3 and steps back."""
    store.put_bytes(SOURCE.container, SOURCE.blob, b"v1")
    v2 = store.put_bytes(SOURCE.container, SOURCE.blob, b"v2")

    def newer_run_commits_first(container: str, blob: str) -> None:
        v3 = store.put_bytes(SOURCE.container, SOURCE.blob, b"v3")
        store.put_bytes(OUTPUT.container, OUTPUT.blob, b"r3",
                        SourceStamp(SOURCE, v3.etag).metadata("udnie", "run-3"))

    store.before_write = newer_run_commits_first
    outcome = commit(store, tmp_path, v2.etag, b"r2")
    assert not outcome.committed
    assert store.read_bytes(OUTPUT.container, OUTPUT.blob) == b"r3"


def test_a_result_of_an_older_version_is_replaced_by_the_current_one(
    store: MemoryBlobStore, tmp_path: Path
) -> None:
    v1 = store.put_bytes(SOURCE.container, SOURCE.blob, b"v1")
    assert commit(store, tmp_path, v1.etag, b"r1").committed
    v2 = store.put_bytes(SOURCE.container, SOURCE.blob, b"v2")
    assert commit(store, tmp_path, v2.etag, b"r2").committed
    assert store.read_bytes(OUTPUT.container, OUTPUT.blob) == b"r2"


def test_an_output_name_holding_another_inputs_blob_is_left_alone(
    store: MemoryBlobStore, tmp_path: Path
) -> None:
    v1 = store.put_bytes(SOURCE.container, SOURCE.blob, b"v1")
    store.put_bytes(OUTPUT.container, OUTPUT.blob, b"someone's",
                    SourceStamp(BlobRef("videos", "other.mp4"), "0x9").metadata("udnie", "r"))
    with pytest.raises(OutputOwnershipError, match="was not made from videos/a/b.mp4"):
        commit(store, tmp_path, v1.etag, b"r1")
    store.put_bytes(OUTPUT.container, OUTPUT.blob, b"hand-made")  # no stamp at all
    with pytest.raises(OutputOwnershipError):
        commit(store, tmp_path, v1.etag, b"r1")
    assert store.read_bytes(OUTPUT.container, OUTPUT.blob) == b"hand-made"


def test_a_commit_that_keeps_losing_gives_up_with_a_clear_error(
    store: MemoryBlobStore, tmp_path: Path
) -> None:
    v1 = store.put_bytes(SOURCE.container, SOURCE.blob, b"v1")
    stamp = SourceStamp(SOURCE, v1.etag).metadata("udnie", "other-run")

    def rewrite_output(container: str, blob: str) -> None:
        store.put_bytes(OUTPUT.container, OUTPUT.blob, b"rival", stamp)
        store.before_write = rewrite_output  # and again, every time

    store.before_write = rewrite_output
    with pytest.raises(BlobConditionError, match="changed under each of 5 commits"):
        commit(store, tmp_path, v1.etag, b"r1")


def test_a_failure_removes_only_an_older_versions_result_of_its_own_input(
    store: MemoryBlobStore, tmp_path: Path
) -> None:
    v1 = store.put_bytes(SOURCE.container, SOURCE.blob, b"v1")
    assert commit(store, tmp_path, v1.etag, b"r1").committed
    # The run of v1 itself failed after its commit: its own result stays.
    assert not remove_stale_output(store, OUTPUT, SOURCE, v1.etag)
    v2 = store.put_bytes(SOURCE.container, SOURCE.blob, b"v2")
    v3 = store.put_bytes(SOURCE.container, SOURCE.blob, b"v3")
    # v2's run failed, but v3 is current: v3's run decides, nothing is removed.
    assert not remove_stale_output(store, OUTPUT, SOURCE, v2.etag)
    # Another input's failure never touches this result, even given this output's name.
    twin = BlobRef("videos", "a/b.mov")
    twin_version = store.put_bytes(twin.container, twin.blob, b"mov")
    assert not remove_stale_output(store, OUTPUT, twin, twin_version.etag)
    assert store.read_bytes(OUTPUT.container, OUTPUT.blob) == b"r1"
    # v3's run failed: r1 shows an older version of the input and goes.
    assert remove_stale_output(store, OUTPUT, SOURCE, v3.etag)
    assert list(store.list_versions(OUTPUT.container)) == []


def test_a_run_for_a_version_that_is_gone_is_superseded_not_failed(
    store: MemoryBlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(outputs, "get_run_logger", lambda: logging.getLogger("test"))
    v1 = store.put_bytes(SOURCE.container, SOURCE.blob, b"v1")
    assert outputs.check_source.fn(store, SOURCE, None) == v1  # a manual run: the current one
    assert outputs.check_source.fn(store, SOURCE, f'"{v1.etag}"') == v1
    v2 = store.put_bytes(SOURCE.container, SOURCE.blob, b"v2")
    assert outputs.check_source.fn(store, SOURCE, v1.etag) is None  # the event's is old
    assert still_current(store, v2) and not still_current(store, v1)
    message = outputs.superseded_now(store, SOURCE).message
    assert message.startswith(f"superseded by version {v2.etag} of 'videos/a/b.mp4'")
    store.delete(SOURCE.container, SOURCE.blob)
    assert outputs.check_source.fn(store, SOURCE, v2.etag) is None  # deleted since the event
    assert outputs.superseded_now(store, SOURCE).message.startswith("superseded by its deletion")
    with pytest.raises(BlobNotFoundError, match="videos/a/b.mp4 does not exist"):
        outputs.check_source.fn(store, SOURCE, None)  # a manual run of a missing input fails
