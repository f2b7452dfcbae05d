"""`make demo`: upload a sample clip, wait for the automation's flow run, fetch the result.

Runs against the stack that ``tools/stack.sh up`` started (its environment comes from
``tools/stack.sh env``). Prints the flow run's Prefect UI link and the path of the video.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName
from prefect.settings import PREFECT_UI_URL

from tasks.events import BlobVersion
from tasks.naming import stylized_names
from tasks.settings import RestyleSettings
from tasks.storage import BlobNotFoundError, make_blob_store
from tools.sample_clip import sample_clip

TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


async def wait_for_run(version: BlobVersion, timeout: float) -> tuple[str, str]:
    """Wait for the flow run that the upload's event triggered; return its id and state."""
    deadline = time.monotonic() + timeout
    async with get_client() as client:
        while time.monotonic() < deadline:
            runs = await client.read_flow_runs(
                deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=["default"])),
                limit=50,
            )
            for run in runs:
                if run.parameters.get("video") == f"{version.container}/{version.blob}" and \
                        run.parameters.get("etag") == version.etag:
                    state = run.state.type.value if run.state else "PENDING"
                    if state in TERMINAL:
                        return str(run.id), state
                    break
            await asyncio.sleep(2)
    raise TimeoutError(f"no finished flow run for {version.blob} within {timeout:.0f}s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--style", default=None, help="style folder to upload into")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds to wait for the run")
    parser.add_argument("--out", type=Path, default=Path("out"), help="where the result goes")
    args = parser.parse_args()

    settings = RestyleSettings()
    style = args.style or settings.default_style
    store = make_blob_store(settings.storage)
    store.ensure_containers([settings.storage.input_container, settings.storage.output_container])

    clip = sample_clip(settings.work_dir / "demo")
    blob = f"{style}/{clip.stem}{clip.suffix}"
    print(f"uploading {clip} to {settings.storage.input_container}/{blob}")
    version = store.upload_file(settings.storage.input_container, blob, clip, "video/mp4")
    started = time.monotonic()
    run_id, state = asyncio.run(wait_for_run(version, args.timeout))
    run_url = f"{PREFECT_UI_URL.value()}/runs/flow-run/{run_id}"
    print(f"flow run {state.lower()} in {time.monotonic() - started:.0f}s: {run_url}")
    if state != "COMPLETED":
        return 1
    output_blob, _ = stylized_names(blob, style)
    dest = args.out / f"{clip.stem}-{style}.mp4"
    try:
        store.download(settings.storage.output_container, output_blob, dest)
    except BlobNotFoundError:
        print(f"the run completed but {output_blob} is missing", file=sys.stderr)
        return 1
    print(f"styled video: {dest.resolve()}")
    print(f"Prefect UI:   {run_url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
