"""The node side of the smoke job (``make azure-smoke``): what every rank of it runs.

Copied alone into the smoke job's code snapshot and run as ``python -m smoke_node``, so it needs
only the image's Python, torch and mpi4py. Every rank reports its host, its view of CUDA and what
it read from the input mount; an ``allgather`` brings the reports to every rank; rank 0 writes
them, with the MPI library's version, to ``smoke.json`` in the output mount. Under
``--device cuda`` the job then fails on every rank if any rank has no usable GPU, in the words
the backend recognizes as CUDA missing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import socket
import sys
import warnings
from pathlib import Path
from typing import Any

PROBE_NAME = "probe.txt"
REPORT_NAME = "smoke.json"
NO_CUDA_EXIT_CODE = 3


def cuda_facts() -> dict[str, Any]:
    """What torch on this rank makes of CUDA, with the reason when it cannot use it."""
    try:
        import torch
    except ImportError as exc:
        return {"available": False, "reason": f"torch is not installed: {exc}"}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        available = torch.cuda.is_available()
    facts: dict[str, Any] = {
        "available": available, "torch": torch.__version__, "torch_cuda": torch.version.cuda,
    }
    if available:
        local_rank = int(os.environ.get("OMPI_COMM_WORLD_LOCAL_RANK", "0"))
        index = local_rank % torch.cuda.device_count()
        facts.update(device_count=torch.cuda.device_count(),
                     device=torch.cuda.get_device_name(index))
    else:
        facts["reason"] = "; ".join(str(w.message) for w in caught) or "torch sees no GPU"
    return facts


def read_probe(input_dir: Path) -> str:
    """SHA-256 of the probe file in the input mount, or why it could not be read."""
    try:
        return hashlib.sha256((input_dir / PROBE_NAME).read_bytes()).hexdigest()
    except OSError as exc:
        return f"unreadable: {exc}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", type=Path, required=True)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda")
    args = parser.parse_args(argv)

    import mpi4py
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    mine = {"rank": comm.Get_rank(), "host": socket.gethostname(), "cuda": cuda_facts(),
            "probe_sha256": read_probe(args.input)}
    everyone = comm.allgather(mine)
    if comm.Get_rank() == 0:
        report = {
            "ranks": everyone,
            "world_size": comm.Get_size(),
            "mpi_library_version": MPI.Get_library_version().strip().splitlines()[0],
            "mpi_version": "{}.{}".format(*MPI.Get_version()),
            "mpi4py_version": mpi4py.__version__,
            "python": sys.version.split()[0],
        }
        args.output.mkdir(parents=True, exist_ok=True)
        tmp = args.output / f".{REPORT_NAME}.tmp"
        tmp.write_text(json.dumps(report, indent=2))
        os.replace(tmp, args.output / REPORT_NAME)
        print(f"smoke: {comm.Get_size()} ranks on {report['mpi_library_version']}", flush=True)
    comm.Barrier()
    missing = [r for r in everyone if not r["cuda"]["available"]]
    if args.device == "cuda" and missing:
        if comm.Get_rank() == 0:
            for r in missing:
                print(f"smoke_node: error: no CUDA device is available on rank {r['rank']} "
                      f"({r['host']}): {r['cuda'].get('reason')}", file=sys.stderr, flush=True)
        sys.exit(NO_CUDA_EXIT_CODE)


if __name__ == "__main__":
    main()
