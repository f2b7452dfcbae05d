"""bench.quality.goals: shipped/baseline ratios and the issue's goals from measured numbers."""

from __future__ import annotations

import pytest

from bench.quality.goals import compare_with_baseline, evaluate_goals, goal_check


def network_entry(arch: str, temporal_weight: float | None, content: float, style: float,
                  warping: list[float]) -> dict:
    """The parts of a report entry that comparisons and goals read."""
    return {"arch": arch, "temporal_weight": temporal_weight,
            "ours": {"content_loss": content, "style_loss": style},
            "temporal": {f"clip{i}": {"warping_error": e} for i, e in enumerate(warping)}}


def test_compare_with_baseline_gives_shipped_over_baseline_ratios() -> None:
    shipped = network_entry("stylenet", 100.0, 0.6, 2.0, [0.01, 0.03])
    johnson = network_entry("johnson", 100.0, 0.8, 1.6, [0.02, 0.02])
    comparison = compare_with_baseline("s-johnson", johnson, "s", shipped)
    assert comparison["baseline"] == "s-johnson" and comparison["shipped"] == "s"
    assert comparison["arch"] == {"shipped": "stylenet", "baseline": "johnson"}
    assert comparison["temporal_weight"] == {"shipped": 100.0, "baseline": 100.0}
    assert comparison["content_loss"] == {"shipped": 0.6, "baseline": 0.8,
                                          "ratio": pytest.approx(0.75)}
    assert comparison["style_loss"]["ratio"] == pytest.approx(1.25)
    assert comparison["warping_error"]["shipped"] == pytest.approx(0.02)
    assert comparison["warping_error"]["ratio"] == pytest.approx(1.0)
    no_clips = compare_with_baseline("b", network_entry("johnson", 1, 1, 1, []), "s",
                                             network_entry("stylenet", 1, 1, 1, []))
    assert no_clips["warping_error"] == {"shipped": None, "baseline": None, "ratio": None}


def test_goal_check_compares_both_ways_and_leaves_unmeasured_goals_open() -> None:
    assert goal_check("g", "s", 1.5, "<=", 1.5)["met"] is True
    assert goal_check("g", "s", 1.6, "<=", 1.5)["met"] is False
    assert goal_check("g", "s", 9_999.0, ">=", 10_000)["met"] is False
    assert goal_check("g", "s", None, ">=", 10_000)["met"] is None
    with pytest.raises(ValueError, match="comparison"):
        goal_check("g", "s", 1.0, "<", 1.5)


def style_entry(ours_style: float, ours_content: float, gatys_style: float,
                gatys_content: float, speedup: float) -> dict:
    """The parts of a report's style entry that the goals read."""
    return {"gatys": {"style_loss": gatys_style, "content_loss": gatys_content,
                      "ours_style_loss_same_frames": ours_style,
                      "ours_content_loss_same_frames": ours_content},
            "speed": {"speedup_vs_gatys_batched": speedup}}


def test_goals_from_measured_numbers() -> None:
    styles = {"good": style_entry(1.4, 0.5, 1.0, 1.0, 20_000.0),
              "bad": style_entry(1.6, 2.0, 1.0, 1.0, 5_000.0)}
    shipped = network_entry("stylenet", 100.0, 0.6, 2.0, [0.01])
    comparisons = [
        compare_with_baseline("good-no_temporal",
                                      network_entry("stylenet", 0.0, 0.6, 2.0, [0.025]),
                                      "good", shipped),
        compare_with_baseline("good-johnson",
                                      network_entry("johnson", 100.0, 0.5, 2.5, [0.01]),
                                      "good", shipped),
    ]
    goals = evaluate_goals(styles, comparisons)
    checks = {(c["subject"], c["goal"].split(" ")[0]): c for c in goals["checks"]}
    assert len(goals["checks"]) == 2 * 3 + 1 + 2 and not goals["all_met"]
    assert checks[("good", "style_loss")]["measured"] == pytest.approx(1.4)
    assert checks[("good", "style_loss")]["threshold"] == 1.5
    assert checks[("good", "style_loss")]["met"] and checks[("good", "content_loss")]["met"]
    assert checks[("good", "speedup")]["met"] and not checks[("bad", "speedup")]["met"]
    assert not checks[("bad", "style_loss")]["met"]
    assert checks[("bad", "content_loss")]["measured"] == pytest.approx(2.0)
    warping = checks[("good vs good-no_temporal", "warping")]
    assert warping["measured"] == pytest.approx(0.4) and warping["met"]
    assert warping["comparison"] == "<=" and warping["threshold"] == 0.5
    johnson_style = next(c for c in goals["checks"]
                         if c["subject"] == "good vs good-johnson" and "style_loss" in c["goal"])
    johnson_content = next(c for c in goals["checks"] if c["subject"] == "good vs good-johnson"
                           and "content_loss" in c["goal"])
    assert johnson_style["measured"] == pytest.approx(0.8) and johnson_style["met"]
    assert johnson_content["measured"] == pytest.approx(1.2) and not johnson_content["met"]
    only_good = evaluate_goals({"good": styles["good"]}, comparisons[:1])
    assert only_good["all_met"]


def test_goals_stay_open_when_gatys_was_skipped() -> None:
    styles = {"s": {"gatys": {"skipped": "--gatys-frames 0"},
                    "speed": {"speedup_vs_gatys_batched": None}}}
    goals = evaluate_goals(styles, [])
    assert [c["met"] for c in goals["checks"]] == [None, None, None]
    assert not goals["all_met"]
