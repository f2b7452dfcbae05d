"""Group ``bench.stylize_job`` reports by their settings, clip, chunk length and batch size as
run, with the median share of the host's x264 rate that the job reached, as JSON.

Reads a file made by collecting such reports (``docs/job_variants_h200.json``: ``calls``, each
with named ``runs``) or a single report. The share is each run's ``job.fps / encode_fps``, the
rate the goal compares (0.9), or for a report of several ``--job-runs`` each run's own
``share`` (against the x264 rates measured on either side of it); ``met_runs`` counts the runs
at or above 0.9.

    python -m bench.variant_summary docs/job_variants_h200.json
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

TARGET_SHARE = 0.9
"""The issue's goal: the job at this share of the lesser of the model's and the host's x264
frames/s (``bench.stylize_job`` judges its runs by it too)."""


def runs_of(document: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """``(where, report)`` for every report in a collection of calls, or the one report."""
    if "calls" not in document:
        return [("report", document)]
    return [(f"call {call['call']}: {name}", report)
            for call in document["calls"] for name, report in call["runs"].items()]


def single_run(clip: dict[str, Any]) -> dict[str, Any]:
    """A report's one run: its job's frames/s over the x264 rate measured before it."""
    return {"job_fps": clip["job"]["fps"], "x264_fps": clip["encode_fps"],
            "share": round(clip["job"]["fps"] / clip["encode_fps"], 3)}


def as_run(clip: dict[str, Any]) -> dict[str, Any]:
    """What a clip's settings of ``default`` came to: the defaults have changed between reports
    (2 s chunks and batches of 8 before 4 s and 16), so runs are grouped by these as well."""
    return {"chunk_frames": clip.get("chunk_frames"), "batch_size": clip["job"].get("batch_size")}


def summarize(document: dict[str, Any]) -> list[dict[str, Any]]:
    """One entry per settings, clip and :func:`as_run`: the runs' shares in order, their median
    and count met."""
    groups: dict[str, dict[str, Any]] = {}
    for where, report in runs_of(document):
        settings = {k: v for k, v in report["settings"].items() if k != "command"}
        for clip in report["clips"]:
            if "job" not in clip:  # a clip that failed records only its error
                continue
            ran = as_run(clip)
            key = json.dumps([settings, clip["clip"], ran], sort_keys=True)
            group = groups.setdefault(key, {"settings": settings, "clip": clip["clip"],
                                            "as_run": ran, "runs": []})
            for n, run in enumerate(clip.get("job_runs") or [single_run(clip)]):
                group["runs"].append({"run": where if "job_runs" not in clip
                                      else f"{where} #{n + 1}", **run})
    for group in groups.values():
        shares = [run["share"] for run in group["runs"]]
        group["median_share"] = round(statistics.median(shares), 3)
        group["met_runs"] = sum(share >= TARGET_SHARE for share in shares)
    return list(groups.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reports", type=Path, help="collected reports, or one report")
    args = parser.parse_args()
    print(json.dumps(summarize(json.loads(args.reports.read_text())), indent=1))


if __name__ == "__main__":
    main()
