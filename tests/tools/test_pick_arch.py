"""tools.pick_arch: which StyleNet the device training script trains, from a timing run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tools.pick_arch import candidate_rates, pick


def row(hparams: str, fps: float | None, size: str = "1920x1080") -> dict:
    entry = {"model": f"stylenet:{hparams} (seeded)", "size": size, "variant": "bf16-default"}
    if fps is None:
        entry["error"] = "RuntimeError: compile failed"
    else:
        entry["fps"] = fps
    return entry


RESULTS = [
    row('{"head": "full_res"}', 970.0),
    row('{"head": "full_res"}', 990.0),  # a second variant of the same candidate: best counts
    row('{"head": "full_res"}', 5000.0, size="1280x720"),  # other sizes do not count
    row('{"head": "subpixel"}', None),  # failed variant
    row('{"head": "subpixel"}', 1290.0),
    row('{"head": "subpixel", "blocks": 4}', 1480.0),
    {"model": "starry_night", "size": "1920x1080", "fps": 9999.0},  # not a candidate
]


def test_rates_keep_the_best_variant_per_candidate_in_measured_order() -> None:
    assert candidate_rates(RESULTS, "1920x1080") == {
        '{"head": "full_res"}': 990.0,
        '{"head": "subpixel"}': 1290.0,
        '{"head": "subpixel", "blocks": 4}': 1480.0,
    }


def test_the_first_candidate_fast_enough_wins_over_a_faster_later_one() -> None:
    rates = candidate_rates(RESULTS, "1920x1080")
    assert pick(rates, 1050) == '{"head": "subpixel"}'
    assert pick(rates, 900) == '{"head": "full_res"}'


def test_without_any_fast_enough_candidate_the_fastest_wins() -> None:
    assert pick(candidate_rates(RESULTS, "1920x1080"), 2000) == '{"head": "subpixel", "blocks": 4}'


def test_no_measured_candidate_is_an_error() -> None:
    with pytest.raises(ValueError, match="no stylenet candidate"):
        pick(candidate_rates([row('{"head": "subpixel"}', None)], "1920x1080"), 1000)


def test_cli_prints_the_chosen_hparams_as_json(tmp_path: Path) -> None:
    path = tmp_path / "candidates.json"
    path.write_text(json.dumps({"results": RESULTS}))
    done = subprocess.run([sys.executable, "-m", "tools.pick_arch", str(path), "--min-fps",
                           "1050"], capture_output=True, text=True, check=True)
    assert json.loads(done.stdout) == {"head": "subpixel"}
    assert "<- chosen" in done.stderr
