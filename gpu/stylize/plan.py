"""The job's plan: the manifest checked for what the job relies on, and the chunks still to do."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gpu import jobdir
from gpu.jobdir import JobManifest
from gpu.stylize.errors import JobInputError


@dataclass(frozen=True)
class Plan:
    """What rank 0 broadcasts: the manifest and the chunks still to do, or why there are none."""

    manifest: JobManifest | None
    pending: list[int]
    error: str | None = None


def plan_job(input_dir: Path, output_dir: Path, model_path: Path) -> Plan:
    """Validate the job folder and list the chunks not done yet (run on rank 0 only)."""
    try:
        manifest = read_valid_manifest(input_dir)
        if not model_path.is_file():
            raise JobInputError(f"model file not found: {model_path}")
        pending = [c.index for c in manifest.chunks if not jobdir.is_chunk_done(output_dir, c)]
        for position in pending:
            source = input_dir / manifest.chunks[position].file
            if not source.is_file():
                raise JobInputError(f"input chunk {position} not found: {source}")
    except JobInputError as err:
        return Plan(manifest=None, pending=[], error=str(err))
    return Plan(manifest=manifest, pending=pending)


def read_valid_manifest(input_dir: Path) -> JobManifest:
    """The manifest of ``input_dir``, checked for what the job relies on.

    Raises:
        JobInputError: The folder or manifest is missing, unreadable or inconsistent.
    """
    path = input_dir / jobdir.MANIFEST_NAME
    if not input_dir.is_dir():
        raise JobInputError(f"input folder not found: {input_dir}")
    if not path.is_file():
        raise JobInputError(f"no {jobdir.MANIFEST_NAME} in {input_dir}: not a restyle job folder")
    try:
        manifest = jobdir.read_manifest(input_dir)
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise JobInputError(f"bad job manifest {path}: {type(err).__name__}: {err}") from err
    problems = []
    if manifest.width < 1 or manifest.height < 1:
        problems.append(f"frame size {manifest.width}x{manifest.height} is not positive")
    elif manifest.input_format.pix_fmt == "yuv420p" and (manifest.width % 2 or
                                                         manifest.height % 2):
        problems.append(f"yuv420p chunks need an even frame size, not "
                        f"{manifest.width}x{manifest.height}")
    if not manifest.chunks:
        problems.append("it lists no chunks")
    for position, chunk in enumerate(manifest.chunks):
        if chunk.index != position:
            problems.append(f"chunk at position {position} has index {chunk.index}")
        if chunk.frames < 1:
            problems.append(f"chunk {chunk.index} has {chunk.frames} frames")
    if problems:
        raise JobInputError(f"bad job manifest {path}: " + "; ".join(problems[:5]))
    return manifest


