"""The default-strength rule of bench.quality.strength (the score: test_structure.py)."""

from __future__ import annotations

from bench.quality.strength import STRUCTURE_GOAL, choose_default


def test_default_is_the_strongest_strength_that_keeps_structure_on_every_frame() -> None:
    gatys = [0.8, 0.7]
    rows = {0.25: [0.95, 0.9], 0.5: [0.75, 0.65], 0.75: [0.6, 0.7]}
    # 0.5 fits frame 1 (0.75 >= 0.72) and frame 2 (0.65 >= 0.63); 0.75 fails frame 1.
    assert choose_default(rows, gatys) == 0.5
    assert STRUCTURE_GOAL == 0.9


def test_no_default_when_no_strength_keeps_structure() -> None:
    assert choose_default({0.0: [0.5]}, [0.9]) is None
