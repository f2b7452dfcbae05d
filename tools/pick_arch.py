"""Pick the StyleNet hyper-parameters to train from a ``bench.model_fps`` run of candidates.

    python -m tools.pick_arch MODEL_FPS_JSON --min-fps 1050 --size 1920x1080

Candidates are the JSON hyper-parameters after ``stylenet:`` in the run's model labels, in the
order they were measured, which is the order of preference (the most capable first). Prints
the first candidate whose fastest bf16 variant reaches ``--min-fps`` at ``--size``, or else
the fastest of them, as JSON on stdout; the reasoning goes to stderr. The device training
script uses it to decide, in the same call, which architecture the styles are trained in.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

PREFIX, SUFFIX = "stylenet:", " (seeded)"


def candidate_rates(results: list[dict], size: str) -> dict[str, float]:
    """Best measured fps of each ``stylenet:{...}`` candidate at ``size``, in measured order."""
    rates: dict[str, float] = {}
    for row in results:
        label = row["model"]
        if not (label.startswith(PREFIX) and label.endswith(SUFFIX)) or row["size"] != size:
            continue
        if "fps" not in row:  # skipped or failed
            continue
        hparams = label[len(PREFIX):-len(SUFFIX)]
        rates[hparams] = max(rates.get(hparams, 0.0), row["fps"])
    return rates


def pick(rates: dict[str, float], min_fps: float) -> str:
    """The first candidate at ``min_fps`` or faster, else the fastest one."""
    if not rates:
        raise ValueError("no stylenet candidate was measured")
    for hparams, fps in rates.items():
        if fps >= min_fps:
            return hparams
    return max(rates, key=rates.__getitem__)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model_fps_json", type=Path)
    parser.add_argument("--min-fps", type=float, required=True)
    parser.add_argument("--size", default="1920x1080")
    args = parser.parse_args()
    rates = candidate_rates(json.loads(args.model_fps_json.read_text())["results"], args.size)
    chosen = pick(rates, args.min_fps)
    for hparams, fps in rates.items():
        print(f"{fps:8.1f} fps  {hparams}{'  <- chosen' if hparams == chosen else ''}",
              file=sys.stderr)
    print(json.dumps(json.loads(chosen)))


if __name__ == "__main__":
    main()
