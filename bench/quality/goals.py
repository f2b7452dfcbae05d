"""The report's judgement: ours next to Gatys, shipped networks against baselines, the goals.

The goals are the issue's targets checked against the measured numbers: losses within 1.5x of
Gatys', a speedup of at least 10000, half the warping error of the no-temporal baseline, and
losses no worse than the Johnson baseline.
"""

from __future__ import annotations

import numpy as np

from bench.quality.metrics import mean_of, ratio

GOAL_GATYS_LOSS_FACTOR = 1.5
GOAL_SPEEDUP = 10_000
GOAL_NO_TEMPORAL_WARPING_FACTOR = 0.5
GOAL_JOHNSON_LOSS_FACTOR = 1.0


def gatys_summary(runs: list[dict], ours_per_frame: list[dict], steps: int) -> dict:
    """A style's Gatys losses next to ours on the same frames, with each run's record."""
    frames_run = {run["frame"] for run in runs}
    same_frames = [record for record in ours_per_frame if record["frame"] in frames_run]
    return {"steps": steps, "frames": len(runs),
            "content_loss": mean_of(runs, "content_loss"),
            "style_loss": mean_of(runs, "style_loss"),
            "ours_content_loss_same_frames": mean_of(same_frames, "content_loss"),
            "ours_style_loss_same_frames": mean_of(same_frames, "style_loss"),
            "per_frame": runs}


def mean_warping_error(entry: dict) -> float | None:
    """A network's warping error averaged over the clips (None without clips)."""
    errors = [clip["warping_error"] for clip in entry["temporal"].values()]
    return float(np.mean(errors)) if errors else None


def compare_with_baseline(baseline: str, baseline_entry: dict, shipped: str,
                          shipped_entry: dict) -> dict:
    """Shipped model vs a baseline of its style: each metric with ratio shipped / baseline.

    Below 1 the shipped model is better on that metric (all three are errors).
    """
    def metric(shipped_value: float | None, baseline_value: float | None) -> dict:
        return {"shipped": shipped_value, "baseline": baseline_value,
                "ratio": ratio(shipped_value, baseline_value)}

    return {
        "baseline": baseline, "shipped": shipped,
        "arch": {"shipped": shipped_entry["arch"], "baseline": baseline_entry["arch"]},
        "temporal_weight": {"shipped": shipped_entry["temporal_weight"],
                            "baseline": baseline_entry["temporal_weight"]},
        "content_loss": metric(shipped_entry["ours"]["content_loss"],
                               baseline_entry["ours"]["content_loss"]),
        "style_loss": metric(shipped_entry["ours"]["style_loss"],
                             baseline_entry["ours"]["style_loss"]),
        "warping_error": metric(mean_warping_error(shipped_entry),
                                mean_warping_error(baseline_entry)),
    }


def goal_check(goal: str, subject: str, measured: float | None, comparison: str,
               threshold: float) -> dict:
    """One goal: ``measured <comparison> threshold``; ``met`` is None when not measured."""
    if comparison not in ("<=", ">="):
        raise ValueError(f"comparison must be '<=' or '>=', got {comparison!r}")
    met = None
    if measured is not None:
        met = measured <= threshold if comparison == "<=" else measured >= threshold
    return {"goal": goal, "subject": subject, "measured": measured, "comparison": comparison,
            "threshold": threshold, "met": met}


def evaluate_goals(styles: dict[str, dict], comparisons: list[dict]) -> dict:
    """The issue's goals, checked against the report's measured numbers.

    Per style: style and content loss at most 1.5x Gatys' on the same frames, and a speedup
    (Gatys alone over our batched time per frame) of at least 10000. Per baseline trained
    without the temporal term: warping error at most half of it. Per Johnson baseline: style
    and content loss no worse. A goal that could not be measured (Gatys skipped, no clips) has
    ``met`` None, and then ``all_met`` is false.

    Args:
        styles: the report's ``styles`` section.
        comparisons: :func:`compare_with_baseline` records.
    """
    checks = []
    for style, entry in styles.items():
        gatys = entry["gatys"]
        for loss in ("style_loss", "content_loss"):
            checks.append(goal_check(
                f"{loss} <= {GOAL_GATYS_LOSS_FACTOR} x Gatys (ours / Gatys, same frames)", style,
                ratio(gatys.get(f"ours_{loss}_same_frames"), gatys.get(loss)), "<=",
                GOAL_GATYS_LOSS_FACTOR))
        checks.append(goal_check(
            f"speedup >= {GOAL_SPEEDUP} (Gatys alone / ours batched, per frame)", style,
            entry["speed"]["speedup_vs_gatys_batched"], ">=", GOAL_SPEEDUP))
    for comparison in comparisons:
        subject = f"{comparison['shipped']} vs {comparison['baseline']}"
        if comparison["temporal_weight"]["baseline"] == 0:
            checks.append(goal_check(
                f"warping error <= {GOAL_NO_TEMPORAL_WARPING_FACTOR} x no-temporal baseline "
                "(shipped / baseline)", subject, comparison["warping_error"]["ratio"], "<=",
                GOAL_NO_TEMPORAL_WARPING_FACTOR))
        if comparison["arch"]["baseline"] == "johnson":
            for loss in ("style_loss", "content_loss"):
                checks.append(goal_check(
                    f"{loss} not worse than Johnson (shipped / baseline)", subject,
                    comparison[loss]["ratio"], "<=", GOAL_JOHNSON_LOSS_FACTOR))
    return {"all_met": all(check["met"] is True for check in checks), "checks": checks}
