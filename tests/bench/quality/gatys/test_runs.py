"""bench.quality.gatys.runs: which frames Gatys runs on, and which run is timed alone."""

from __future__ import annotations

from bench.quality.gatys import runs


def test_gatys_frames_rotate_between_styles_to_cover_more_frames() -> None:
    frames = [f"f{index}" for index in range(8)]
    styles = ["a", "b", "c", "d", "e", "f"]
    one_each = runs.gatys_frames_by_style(styles, frames, 1)
    assert one_each == {"a": ["f0"], "b": ["f1"], "c": ["f2"], "d": ["f4"], "e": ["f5"],
                        "f": ["f6"]}
    two_each = runs.gatys_frames_by_style(styles[:2], frames, 2)
    assert two_each == {"a": ["f0", "f4"], "b": ["f4", "f0"]}
    assert runs.gatys_frames_by_style(styles, frames, None) == {s: frames for s in styles}
    assert runs.gatys_frames_by_style(styles, frames, 0) == {s: [] for s in styles}


def test_the_solo_timing_comes_only_from_a_run_alone_on_this_device() -> None:
    jobs = [("a", "f0"), ("a", "f1"), ("b", "f0")]
    alone = {"concurrent_processes": 1, "device": "H200"}
    pooled = {"concurrent_processes": 6, "device": "H200"}
    assert runs.choose_solo_job(jobs, {}, "H200") == (("a", "f0"), False)
    assert runs.choose_solo_job(jobs, {("a", "f0"): pooled, ("b", "f0"): alone},
                                   "H200") == (("b", "f0"), True)
    assert runs.choose_solo_job(jobs, {("a", "f0"): pooled}, "H200") == (("a", "f1"), False)
    assert runs.choose_solo_job(jobs, {("a", "f1"): alone}, "cpu") == (("a", "f0"), False)
    every_job_pooled = dict.fromkeys(jobs, pooled)
    assert runs.choose_solo_job(jobs, every_job_pooled, "H200") == (("a", "f0"), False)
    assert runs.choose_solo_job([], {}, "H200") == (None, False)
