"""Moved to :mod:`tasks.compute`; this re-export only bridges the merge of flows/ and tests.

Remove it once nothing imports ``tasks.dispatch``.
"""

from tasks.compute.base import ComputeBackend, GpuJob, GpuJobError, GpuJobResult, ProgressCallback
from tasks.compute.local import LocalMpiBackend, build_mpiexec_argv, mpiexec_path
from tasks.compute.run import get_backend, run_gpu_job

__all__ = [
    "ComputeBackend",
    "GpuJob",
    "GpuJobError",
    "GpuJobResult",
    "LocalMpiBackend",
    "ProgressCallback",
    "build_mpiexec_argv",
    "get_backend",
    "mpiexec_path",
    "run_gpu_job",
]
