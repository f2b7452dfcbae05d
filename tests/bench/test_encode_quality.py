"""bench/encode_quality.py: its choice rule as pure functions, and a tiny real sweep's JSON."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from bench import encode_quality
from bench.encode_quality import Comparison, Setting, Stats, choose, compare, summarize
from gpu.ffmpeg import find_ffmpeg
from gpu.video_io import encode_argv, yuv420_frame_bytes
from tests.clips import make_clip

BASE = Setting("veryfast", 18)


def comparison(label: str, vmaf_drop: float, bits_ratio: float, speedup: float) -> Comparison:
    setting = Setting.parse(label)
    return Comparison(setting.preset, setting.crf, vmaf_drop, bits_ratio, speedup)


def labels(choice: dict[str, Comparison | None]) -> dict[str, str | None]:
    return {name: c.setting.label if c else None for name, c in choice.items()}


def test_choose_default_is_fastest_within_vmaf_and_bits() -> None:
    choice = choose([
        comparison("veryfast:18", 0.0, 1.0, 1.0),
        comparison("superfast:17", 0.4, 1.05, 1.7),    # the default: fast, matched, few bits
        comparison("ultrafast:18", -3.0, 1.60, 3.8),   # fastest, but 60% more bits
        comparison("ultrafast:23", 0.6, 0.95, 4.0),    # faster still, but VMAF drops 0.6
        comparison("faster:20", 0.3, 0.80, 0.8),       # smallest file
        comparison("faster:23", 1.5, 0.60, 0.9),       # smaller, but VMAF drops 1.5
    ])
    assert labels(choice) == {"default": "superfast:17", "fastest": "ultrafast:18",
                              "smallest": "faster:20"}


def test_choose_applies_the_limits_inclusively() -> None:
    choice = choose([comparison("veryfast:18", 0.0, 1.0, 1.0),
                     comparison("superfast:18", 0.5, 1.10, 1.5)])
    assert labels(choice)["default"] == "superfast:18"


def test_choose_treats_speeds_within_tolerance_as_tied_and_takes_fewer_bits() -> None:
    settings = [comparison("superfast:17", 0.2, 1.08, 1.70),
                comparison("superfast:18", 0.4, 0.98, 1.67)]
    assert labels(choose(settings, speed_tolerance=0.03))["default"] == "superfast:18"
    assert labels(choose(settings, speed_tolerance=0.0))["default"] == "superfast:17"


def test_choose_returns_none_when_no_setting_qualifies() -> None:
    choice = choose([comparison("ultrafast:23", 0.9, 0.9, 4.0),
                     comparison("faster:23", 2.0, 0.5, 0.9)])
    assert choice == {"default": None, "fastest": None, "smallest": None}
    within_vmaf_only = choose([comparison("ultrafast:16", 0.1, 1.8, 3.0)])
    assert labels(within_vmaf_only) == {"default": None, "fastest": "ultrafast:16",
                                        "smallest": "ultrafast:16"}


def test_compare_judges_each_setting_by_its_worst_size() -> None:
    fast = Setting("superfast", 18)
    by_size = {
        "1280x720": {BASE: Stats(95.0, 1000.0, 30.0), fast: Stats(95.0, 900.0, 60.0)},
        "1920x1080": {BASE: Stats(96.0, 2000.0, 15.0), fast: Stats(95.2, 2100.0, 24.0),
                      Setting("ultrafast", 18): Stats(97.0, 3000.0, 50.0)},
    }
    got = {c.setting: c for c in compare(by_size, BASE)}
    # ultrafast:18 was not measured at 720p, so it cannot be judged at every size.
    assert set(got) == {BASE, fast}
    assert got[BASE] == Comparison("veryfast", 18, 0.0, 1.0, 1.0)
    assert got[fast].vmaf_drop == pytest.approx(0.8)
    assert got[fast].bits_ratio == pytest.approx(1.05)
    assert got[fast].speedup == pytest.approx(1.6)
    assert labels(choose(got.values()))["default"] == "veryfast:18"


def test_compare_refuses_a_sweep_without_the_baseline() -> None:
    with pytest.raises(ValueError, match="veryfast:18 was not measured at 1920x1080"):
        compare({"1920x1080": {Setting("ultrafast", 18): Stats(95.0, 1.0, 1.0)}}, BASE)


def test_summarize_means_over_styles_pools_speed_and_drops_unmatched_styles() -> None:
    def record(style: str, crf: int, vmaf: float, bits: float, cpu: float) -> dict:
        return {"size": "64x48", "style": style, "preset": "veryfast", "crf": crf,
                "frames": 10, "cpu_seconds": cpu, "vmaf": vmaf, "bits_per_frame": bits}

    stats = summarize([record("a", 18, 90.0, 100.0, 1.0), record("b", 18, 96.0, 300.0, 3.0),
                       record("a", 20, 88.0, 80.0, 1.0), record("b", 20, 94.0, 200.0, 1.0),
                       record("c", 18, 10.0, 9e9, 9.0)])["64x48"]
    # Style c was measured at CRF 18 only, so it is left out of every setting's figures.
    assert stats[Setting("veryfast", 18)] == Stats(93.0, 200.0, 20 / 4.0)
    assert stats[Setting("veryfast", 20)] == Stats(91.0, 140.0, 20 / 2.0)


def test_encode_command_is_the_jobs_at_one_thread_from_the_file(tmp_path: Path) -> None:
    ffmpeg, reference, target = "ffmpeg", tmp_path / "ref.yuv", tmp_path / "out.mkv"
    argv = encode_quality.encode_from_file_argv(ffmpeg, reference, target, 64, 48,
                                                Setting("superfast", 17))
    job = encode_argv(ffmpeg, target, 64, 48, 17, "superfast", threads=1)
    assert argv == [str(reference) if a == "pipe:0" else a for a in job]
    assert "pipe:0" not in argv


@pytest.mark.parametrize("flag", [["--sizes", "65x48"], ["--baseline", "veryfast"],
                                  ["--styles", "no_such_style"]])
def test_bad_arguments_are_refused_clearly(flag: list[str], tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "clip.mp4", width=64, height=48, seconds=0.2)
    args = encode_quality.get_args_parser().parse_args(["--clip", str(clip), *flag])
    with pytest.raises(SystemExit, match=flag[0]):
        encode_quality.main(args)


@pytest.mark.slow
def test_tiny_sweep_reports_every_setting_and_a_choice(tiny_model_path: Path,
                                                       tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "clip.mp4", width=96, height=64, seconds=0.4)
    work, out = tmp_path / "work", tmp_path / "report.json"
    style = "shipwreck_of_the_minotaur"
    args = encode_quality.get_args_parser().parse_args([
        "--clip", str(clip), "--start-seconds", "0", "--frames", "4",
        "--sizes", "64x48,96x64", "--styles", f"{style},{tiny_model_path}",
        "--presets", "veryfast", "--crfs", "18,36", "--work-dir", str(work), "--out", str(out)])
    report = encode_quality.main(args)

    assert json.loads(out.read_text()) == json.loads(json.dumps(report))
    assert report["settings"] == ["veryfast:18", "veryfast:36"]
    assert report["styles"] == [style, "tiny"] and report["sizes"] == ["64x48", "96x64"]
    records = report["records"]
    assert len(records) == 2 * 2 * 2
    for r in records:
        assert r["frames"] == 4
        assert all(r[k] > 0 and math.isfinite(r[k])
                   for k in ("cpu_seconds", "fps_per_core", "bits_per_frame", "wall_fps"))
        assert 0 <= r["vmaf_min"] <= r["vmaf"] <= 100
    by_key = {(r["size"], r["style"], r["crf"]): r for r in records}
    for size in report["sizes"]:
        for name in report["styles"]:
            fine, coarse = by_key[size, name, 18], by_key[size, name, 36]
            assert coarse["bits_per_frame"] < fine["bits_per_frame"]
            assert coarse["vmaf"] < fine["vmaf"]
    # The lossless reference is kept whole, and nothing partial is left behind.
    reference = work / f"clip-0s-4f-96x64-{style}.yuv"
    assert reference.stat().st_size == 4 * yuv420_frame_bytes(96, 64)
    assert not list(work.glob(".partial-*")) and not list(work.glob("*.mkv"))

    assert set(report["by_size"]) == {"64x48", "96x64"}
    base = report["comparisons"][0]
    assert (base["preset"], base["crf"], base["vmaf_drop"], base["bits_ratio"],
            base["speedup"]) == ("veryfast", 18, 0.0, 1.0, 1.0)
    # CRF 36 loses far more than 0.5 VMAF on tiny frames, so only today's setting qualifies.
    assert report["choice"]["default"]["crf"] == 18
    assert report["choice"]["smallest"]["crf"] == 18
    assert report["ffmpeg"].startswith("ffmpeg version") and find_ffmpeg()
