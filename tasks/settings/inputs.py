"""Settings of what comes in: the limits uploads must fit, and the local blob-event watcher."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field

from tasks.repo import REPO_ROOT


class LimitSettings(BaseModel):
    """Inputs beyond these limits are rejected before any work is done."""

    max_bytes: int = Field(default=4 * 1024**3, description="Largest accepted input, in bytes.")
    max_pixels: int = Field(
        default=3840 * 2160, description="Largest accepted frame, in pixels (width x height)."
    )
    max_duration_s: float = Field(default=3 * 3600, description="Longest accepted input, seconds.")
    min_side: int = Field(
        default=16, ge=8,
        description="Smallest accepted frame side, in pixels: the style networks' padding needs "
        "at least 8, and smaller frames carry no picture worth restyling.",
    )


class WatcherSettings(BaseModel):
    """The local blob-event source that stands in for Event Grid on Azurite."""

    poll_seconds: float = Field(default=0.5, gt=0, description="Seconds between listings.")
    state_path: Path = Field(
        default=REPO_ROOT / ".stack" / "watcher-state.json",
        description="Where the watcher remembers which blob versions it has announced.",
    )
    containers: list[str] = Field(
        default=["videos", "styles"], description="Containers whose new blobs become events."
    )
