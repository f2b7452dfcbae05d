"""What every flow run shares: settings, the blob store, the run id and its work folder.

:func:`run_context` builds a run's context once (settings are read and validated there); the
flow and its state hooks ask for it by run id and get the same object. :class:`WorkDir` is the
only place the work folder's layout is named; a run's folder is ``<work_dir>/<flow run id>``, so
anyone who knows the run id (a hook, the crash recovery) finds it.
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from gpu.jobdir import atomic_write_json
from tasks.naming import local_file_name
from tasks.settings import RestyleSettings
from tasks.storage import BlobStore, make_blob_store

RECORD_NAME = "run.json"


@dataclass(frozen=True)
class WorkDir:
    """One run's scratch folder and the names inside it."""

    path: Path

    @classmethod
    def of_run(cls, work_root: Path, run_id: str) -> WorkDir:
        return cls(work_root / run_id)

    @property
    def run_id(self) -> str:
        return self.path.name

    def source(self, blob: str) -> Path:
        """The local copy of input ``blob``: a bounded, hashed name (``tasks.naming``)."""
        return self.path / "source" / local_file_name(blob)

    @property
    def audio(self) -> Path:
        return self.path / "audio"

    @property
    def gpu_in(self) -> Path:
        """The GPU job's input folder (``gpu/jobdir.py``)."""
        return self.path / "gpu-in"

    @property
    def gpu_out(self) -> Path:
        """The GPU job's output folder; finished chunks in it survive a retry of the job."""
        return self.path / "gpu-out"

    @property
    def result(self) -> Path:
        return self.path / "result.mp4"

    @property
    def frames(self) -> Path:
        return self.path / "frames"

    def write_record(self, record: dict[str, Any]) -> None:
        """Note what the run works on (input blob, version), for hooks and crash recovery."""
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.path / RECORD_NAME, {**self.read_record(), **record})

    def read_record(self) -> dict[str, Any]:
        """What :meth:`write_record` noted; empty when the run noted nothing (yet)."""
        try:
            return dict(json.loads((self.path / RECORD_NAME).read_text()))
        except (OSError, ValueError):
            return {}

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def collect_work_dirs(work_root: Path, is_finished: Callable[[str], bool]) -> list[str]:
    """Remove the work folders of finished runs; returns their run ids.

    Only folders named by a flow run id are considered, and only those whose run
    ``is_finished`` says has reached a final state, so a running run's folder (which a retry of
    its GPU job resumes from) is never touched.
    """
    removed = []
    if not work_root.is_dir():
        return removed
    for folder in sorted(work_root.iterdir()):
        if not folder.is_dir() or not _is_uuid(folder.name):
            continue
        if is_finished(folder.name):
            WorkDir(folder).remove()
            removed.append(folder.name)
    return removed


def _is_uuid(name: str) -> bool:
    try:
        uuid.UUID(name)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class RunContext:
    """Settings, store, run id and work folder of one flow run."""

    settings: RestyleSettings
    store: BlobStore
    run_id: str
    work: WorkDir


@lru_cache(maxsize=16)
def run_context(run_id: str) -> RunContext:
    """The context of flow run ``run_id``, built on first use and shared after."""
    settings = RestyleSettings()
    store = make_blob_store(settings.storage)
    return RunContext(settings, store, run_id, WorkDir.of_run(settings.work_dir, run_id))


def current_run_id() -> str:
    """The flow run's id, or a fresh one outside Prefect (a direct call of the flow's function)."""
    from prefect.runtime import flow_run

    return str(flow_run.get_id() or uuid.uuid4())
