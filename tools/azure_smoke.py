"""Check a new Azure deployment in minutes, before any video: ``make azure-smoke``.

Usage::

    python -m tools.azure_smoke [--scale-wait-minutes N]

Submits a tiny MPI job to the configured workspace (the usual ``RESTYLE_AZUREML__*`` and
``RESTYLE_STORAGE__*`` settings) and prints one line per check, PASS or FAIL with the fix:
image build and pull, CUDA on every rank, an mpi4py allgather on the image's MPI (with its
version), the jobs datastore read and written by the job's identity, blobs written and tagged
by the worker, and the cluster back at zero nodes. Exit status 0 when nothing failed.
"""

from __future__ import annotations

import argparse
import logging
import sys

from tasks.compute.azureml import client as clients
from tasks.compute.azureml.folders import BlobJobStorage
from tasks.compute.azureml.smoke import run_smoke
from tasks.compute.base import GpuJobError
from tasks.settings import RestyleSettings
from tasks.storage import make_blob_store


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--scale-wait-minutes", type=float, default=15.0,
        help="how long to wait for the cluster to scale back to zero nodes after the job "
             "(0: only check that it may; default 15, above compute.yaml's 10 idle minutes)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logger = logging.getLogger("restyle.smoke")
    settings = RestyleSettings()
    try:
        credential = clients.make_credential(settings.azureml)
        ml_client = clients.make_ml_client(settings.azureml, credential)
        storage = BlobJobStorage.from_settings(settings.azureml, credential)
        store = make_blob_store(settings.storage)
    except (GpuJobError, ValueError) as exc:
        print(f"FAIL  configuration: {exc}")
        return 2
    checks = run_smoke(settings, ml_client=ml_client, storage=storage, store=store,
                       logger=logger, scale_wait_seconds=args.scale_wait_minutes * 60)
    print("\nrestyle Azure smoke test")
    for check in checks:
        print(check.line())
    return 1 if any(check.passed is False for check in checks) else 0


if __name__ == "__main__":
    sys.exit(main())
