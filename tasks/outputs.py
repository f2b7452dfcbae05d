"""Results that always show the latest version of their input, committed without lost updates.

Every result records its source in its metadata (:class:`SourceStamp`: the input blob and the
etag of the version it was made from). Three rules follow:

* **Idempotent** (:func:`already_done`): a result that records the input's current version,
  painted with the controls a run asks for (:mod:`tasks.controls`), is final; that run has
  nothing left to do. Other controls for the same version paint it again.
* **Latest version wins** (:func:`commit_output`): a run commits only while its version is still
  the input's current one, and writes with an etag condition on the result it looked at, so a
  result written meanwhile by another run is never replaced blindly; the run looks again.
  Reading the result before the source closes the gap: a newer version's result can only
  appear after that version was uploaded, which the source check then sees.
* **Only its own** (:func:`remove_stale_output`): a failed run of the current version removes a
  result of an *older* version of its own input (it no longer matches the input), and never its
  own version's result or a blob that records another input.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote

from prefect import get_run_logger, task
from prefect.states import Completed, State

from tasks.controls import RunControls
from tasks.events import BlobVersion
from tasks.naming import BlobRef
from tasks.storage import BlobConditionError, BlobNotFoundError, BlobStore

SOURCE_KEY = "restyle_source"
"""Metadata key: the source blob as ``container/blob``, percent-encoded (metadata is ASCII)."""
SOURCE_ETAG_KEY = "restyle_source_etag"
STYLE_KEY = "restyle_style"
FLOW_RUN_KEY = "restyle_flow_run_id"
RESULT_KEYS = (SOURCE_KEY, SOURCE_ETAG_KEY, STYLE_KEY, FLOW_RUN_KEY)
"""The stamp's keys; a result also records its painting controls (:mod:`tasks.controls`)."""
COMMIT_ATTEMPTS = 5


class OutputOwnershipError(RuntimeError):
    """The output name holds a blob that does not record this run's input; it is left alone."""


@dataclass(frozen=True)
class SourceStamp:
    """The input version a result was made from."""

    source: BlobRef
    etag: str

    def metadata(self, style: str, flow_run_id: str) -> dict[str, str]:
        return {
            SOURCE_KEY: quote(self.source.label, safe="/"),
            SOURCE_ETAG_KEY: self.etag,
            STYLE_KEY: style,
            FLOW_RUN_KEY: flow_run_id,
        }

    @classmethod
    def read(cls, metadata: dict[str, str]) -> SourceStamp | None:
        """The stamp in a blob's ``metadata``; ``None`` for a blob without one."""
        label, etag = metadata.get(SOURCE_KEY), metadata.get(SOURCE_ETAG_KEY)
        if not label or not etag or "/" not in label:
            return None
        container, blob = unquote(label).split("/", 1)
        return cls(BlobRef(container, blob), etag)


@dataclass(frozen=True)
class CommitOutcome:
    """What :func:`commit_output` did: committed ``version``, or found the run superseded by
    version ``superseded_by`` of the input (``None``: by the input's deletion)."""

    version: BlobVersion | None = None
    superseded_by: str | None = None

    @property
    def committed(self) -> bool:
        return self.version is not None


def superseded_state(source: BlobRef, newer: str | None) -> State:
    """The final state of a run whose input changed under it: Completed, with no result and no
    report (the newer version's run writes them)."""
    by = f"version {newer}" if newer else "its deletion"
    return Completed(message=f"superseded by {by} of {source.label!r}: that version's run "
                             "writes the result")


def superseded_now(store: BlobStore, source: BlobRef) -> State:
    """:func:`superseded_state` naming the input's current version."""
    current = version_or_none(store, source)
    return superseded_state(source, current.etag if current else None)


def already_done_state(output: BlobRef, source: BlobVersion) -> State:
    """The final state of a run whose result already exists for its input's version."""
    return Completed(message=f"already done: {output.label!r} was made from version "
                             f"{source.etag}")


def version_or_none(store: BlobStore, ref: BlobRef) -> BlobVersion | None:
    """The blob's current version, with its metadata; ``None`` if it does not exist."""
    try:
        return store.get_version(ref.container, ref.blob)
    except BlobNotFoundError:
        return None


def still_current(store: BlobStore, version: BlobVersion) -> bool:
    """Whether ``version`` is still its blob's current version."""
    current = version_or_none(store, BlobRef(version.container, version.blob))
    return current is not None and current.etag == version.etag


def already_done(store: BlobStore, output: BlobRef, source: BlobVersion,
                 controls: RunControls | None = None) -> BlobVersion | None:
    """The existing result of ``source``'s exact version at ``output``, if there is one, and,
    given ``controls``, only if it was painted with them."""
    existing = version_or_none(store, output)
    if existing is None:
        return None
    made_from = SourceStamp.read(existing.metadata)
    wanted = SourceStamp(BlobRef(source.container, source.blob), source.etag)
    if made_from != wanted or (controls is not None and not controls.made(existing.metadata)):
        return None
    return existing


def commit_output(
    store: BlobStore, output: BlobRef, result: Path, stamp: SourceStamp, style: str,
    flow_run_id: str, controls: RunControls,
) -> CommitOutcome:
    """Upload ``result`` to ``output`` unless a newer version of the source exists; its metadata
    records ``stamp``, ``style``, the run and the ``controls`` it was painted with.

    Raises:
        OutputOwnershipError: ``output`` holds a blob that records another input, or none.
        BlobConditionError: the output kept changing under every one of the attempts.
    """
    metadata = {**stamp.metadata(style, flow_run_id), **controls.metadata()}
    for _ in range(COMMIT_ATTEMPTS):
        existing = version_or_none(store, output)  # first, see module docstring
        if existing is not None:
            owner = SourceStamp.read(existing.metadata)
            if owner is None or owner.source != stamp.source:
                raise OutputOwnershipError(
                    f"{output.label} exists and was not made from {stamp.source.label}; "
                    "it is left as it is"
                )
        current = version_or_none(store, stamp.source)
        if current is None or current.etag != stamp.etag:
            return CommitOutcome(superseded_by=current.etag if current else None)
        with contextlib.suppress(BlobConditionError):  # written meanwhile: look again
            return CommitOutcome(version=store.upload_file(
                output.container, output.blob, result, content_type="video/mp4",
                metadata=metadata, if_match=existing.etag if existing else None,
                if_absent=existing is None,
            ))
    raise BlobConditionError(f"{output.label} changed under each of {COMMIT_ATTEMPTS} commits")


def remove_stale_output(store: BlobStore, output: BlobRef, source: BlobRef, run_etag: str
                        ) -> bool:
    """After a failure of version ``run_etag``: remove a result of an older version of ``source``.

    Nothing is removed unless ``run_etag`` is still the source's current version (else a newer
    run owns the decision) and the result records ``source`` with another etag.

    Returns:
        Whether a stale result was removed.
    """
    current = version_or_none(store, source)
    existing = version_or_none(store, output)
    if current is None or current.etag != run_etag or existing is None:
        return False
    owner = SourceStamp.read(existing.metadata)
    if owner is None or owner.source != source or owner.etag == run_etag:
        return False
    try:
        store.delete(output.container, output.blob, if_match=existing.etag)
    except BlobConditionError:  # rewritten meanwhile: by a run that now owns it
        return False
    return True


# --- Prefect tasks --------------------------------------------------------------------------


@task(name="check-source", retries=2, retry_delay_seconds=2)
def check_source(store: BlobStore, source: BlobRef, expected_etag: str | None
                 ) -> BlobVersion | None:
    """The input's current version; ``None`` if the run is superseded: the input differs from
    the version ``expected_etag`` names (the event's), or that version was deleted.

    Raises:
        BlobNotFoundError: no such input, and no event named a version of it.
    """
    version = version_or_none(store, source)
    if version is None and expected_etag is None:
        raise BlobNotFoundError(f"{source.label} does not exist")
    if version is None or (expected_etag and expected_etag.strip('"') != version.etag):
        return None
    get_run_logger().info("input %r is version %s (%d bytes)", source.label, version.etag,
                          version.size)
    return version


@task(name="fetch-input", retries=2, retry_delay_seconds=2)
def fetch_input(store: BlobStore, version: BlobVersion, dest: Path) -> bool:
    """Download exactly ``version`` to ``dest``; ``False`` if the input changed meanwhile."""
    get_run_logger().info("downloading %r", f"{version.container}/{version.blob}")
    try:
        store.download(version.container, version.blob, dest, if_match=version.etag)
    except BlobConditionError:
        return False
    return True


@task(name="commit-result", retries=2, retry_delay_seconds=2)
def commit_result(
    store: BlobStore, output: BlobRef, result: Path, stamp: SourceStamp, style: str,
    flow_run_id: str, controls: RunControls,
) -> CommitOutcome:
    """Commit the finished video unless the input has a newer version (:func:`commit_output`)."""
    get_run_logger().info("committing %r (%d bytes) for version %s of %r", output.label,
                          result.stat().st_size, stamp.etag, stamp.source.label)
    return commit_output(store, output, result, stamp, style, flow_run_id, controls)
