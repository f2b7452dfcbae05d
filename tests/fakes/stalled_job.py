"""A stand-in for a GPU job module that never finishes: each rank records its pid and waits.

Run as ``python -m tests.fakes.stalled_job --input IN --output OUT``; pids land in
``OUT/pids/<rank>``.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--input", type=Path)
    parser.add_argument("--output", type=Path, required=True)
    args, _ = parser.parse_known_args()
    rank = os.environ.get("OMPI_COMM_WORLD_RANK", "0")
    pids = args.output / "pids"
    pids.mkdir(parents=True, exist_ok=True)
    (pids / f".{rank}.tmp").write_text(str(os.getpid()))
    os.replace(pids / f".{rank}.tmp", pids / rank)
    time.sleep(600)


if __name__ == "__main__":
    main()
