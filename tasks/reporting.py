"""Prefect artifacts that make a run legible in the UI: progress, a stats table, before/after."""

from __future__ import annotations

import base64
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

from prefect import task
from prefect.artifacts import (
    create_link_artifact,
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

from gpu.jobdir import ChunkReport
from tasks.controls import RunControls


class StageClock:
    """Seconds spent per named stage, for the stats table."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        started = time.monotonic()
        try:
            yield
        finally:
            self.seconds[name] = time.monotonic() - started


@dataclass
class RunStats:
    """What one stylize run measured, for the table artifact."""

    video: str
    style: str
    frames: int
    width: int
    height: int
    stage_seconds: dict[str, float] = field(default_factory=dict)
    reports: list[ChunkReport] = field(default_factory=list)
    backend: str = "local"
    gpu_attempts: int = 1
    reused_chunks: int | None = None
    retry_reasons: list[str] = field(default_factory=list)
    controls: RunControls | None = None

    @classmethod
    def gpu_facts(cls, result: object) -> dict[str, Any]:
        """The GPU step's ``backend``, ``attempts``, ``reused_chunks`` and ``retry_reasons`` as
        keyword arguments, read defensively: a backend's result may lack the newer fields."""
        return {
            "backend": str(getattr(result, "backend", "local")),
            "gpu_attempts": int(getattr(result, "attempts", 1) or 1),
            "reused_chunks": getattr(result, "reused_chunks", None),
            "retry_reasons": list(getattr(result, "retry_reasons", []) or []),
        }

    def rows(self) -> list[dict[str, str | int | float]]:
        rows: list[dict[str, str | int | float]] = [
            {"item": "video", "value": self.video},
            {"item": "style", "value": self.style},
            *(self.controls.rows() if self.controls else []),
            {"item": "frames", "value": self.frames},
            {"item": "resolution", "value": f"{self.width}x{self.height}"},
            {"item": "compute backend", "value": self.backend},
            {"item": "GPU job attempts", "value": self.gpu_attempts},
        ]
        if self.reused_chunks is not None:
            rows.append({"item": "reused chunks", "value": self.reused_chunks})
        rows += [{"item": f"retry {i + 1} reason", "value": reason}
                 for i, reason in enumerate(self.retry_reasons)]
        for stage, seconds in self.stage_seconds.items():
            fps = self.frames / seconds if seconds > 0 else 0.0
            rows.append({"item": f"{stage} seconds", "value": round(seconds, 2)})
            rows.append({"item": f"{stage} fps", "value": round(fps, 1)})
        chunks = Counter(r.rank for r in self.reports)
        frames = Counter()
        for report in self.reports:
            frames[report.rank] += report.frames
        for rank in sorted(chunks):
            rows.append(
                {"item": f"rank {rank} chunks", "value": f"{chunks[rank]} ({frames[rank]} frames)"}
            )
        return rows


class ProgressReporter:
    """A progress artifact that advances as the GPU job finishes chunks."""

    def __init__(self, total_chunks: int, description: str) -> None:
        self.total = max(total_chunks, 1)
        self.last = -1.0
        self.artifact_id: UUID = create_progress_artifact(  # type: ignore[assignment]
            progress=0.0, key="stylize-progress", description=description
        )

    def update(self, done_chunks: int) -> None:
        progress = round(100.0 * min(done_chunks, self.total) / self.total, 1)
        if progress != self.last:
            update_progress_artifact(artifact_id=self.artifact_id, progress=progress)
            self.last = progress


@task(name="publish-report")
def publish_report(stats: RunStats, frames: tuple[Path, Path] | None, result_url: str) -> None:
    """Publish the stats table, the before/after frame (when there is one) and the result link."""
    create_table_artifact(
        key="stylize-stats", table=stats.rows(), description=f"{stats.video} in {stats.style}"
    )
    if frames is not None:
        create_markdown_artifact(
            key="before-after",
            markdown=before_after_markdown(*frames, stats),
            description="One frame before and after",
        )
    create_link_artifact(key="stylized-video", link=result_url, link_text="stylized video")


def before_after_markdown(before_png: Path, after_png: Path, stats: RunStats) -> str:
    def inline(path: Path) -> str:
        return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()

    return (
        f"### {stats.video} — {stats.style}\n\n"
        "| before | after |\n|---|---|\n"
        f"| ![before]({inline(before_png)}) | ![after]({inline(after_png)}) |\n"
    )
