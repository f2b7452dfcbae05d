"""Where a rank runs (its device and threads), the MPI work counter, and the rank's log."""

from __future__ import annotations

import os
import socket
import sys
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from gpu.stylize.errors import JobInputError

if TYPE_CHECKING:
    from mpi4py import MPI


@dataclass(frozen=True)
class Placement:
    """Where this process runs: its MPI rank and the device it drives."""

    rank: int
    size: int
    host: str
    device: torch.device
    device_name: str
    threads: int



def _local_rank_and_size() -> tuple[int, int]:
    """This process's index among the ranks on its node, and how many ranks the node runs."""
    env = os.environ
    local_rank = env.get("OMPI_COMM_WORLD_LOCAL_RANK", env.get("LOCAL_RANK", "0"))
    local_size = env.get("OMPI_COMM_WORLD_LOCAL_SIZE", env.get("LOCAL_WORLD_SIZE", "1"))
    return int(local_rank), max(1, int(local_size))


def default_threads(local_size: int) -> int:
    """CPU threads for one rank: its share of the node's cores.

    When mpiexec binds the rank to some cores, that binding is already its share (FFmpeg
    children inherit it too); launch with ``--bind-to none`` to let every rank use all cores.
    """
    usable, total = len(os.sched_getaffinity(0)), os.cpu_count() or 1
    return usable if usable < total else max(1, total // local_size)



def place(comm: MPI.Comm, requested: str, threads: int) -> Placement:
    """Pick this rank's device: GPU ``local rank mod device count`` under CUDA, else the CPU.

    Raises:
        JobInputError: CUDA was requested but is not available.
    """
    local_rank, local_size = _local_rank_and_size()
    threads = threads or default_threads(local_size)
    torch.set_num_threads(threads)
    use_cuda = requested == "cuda" or (requested == "auto" and torch.cuda.is_available())
    if use_cuda:
        if not torch.cuda.is_available():
            raise JobInputError("--device cuda: no CUDA device is available on this node")
        index = local_rank % torch.cuda.device_count()
        torch.cuda.set_device(index)
        # Every batch has the same shape, so the fastest convolution algorithms are found once.
        torch.backends.cudnn.benchmark = True
        device, name = torch.device("cuda", index), torch.cuda.get_device_name(index)
    else:
        device, name = torch.device("cpu"), "cpu"
    return Placement(rank=comm.Get_rank(), size=comm.Get_size(), host=socket.gethostname(),
                     device=device, device_name=name, threads=threads)



class WorkCounter:
    """A counter on rank 0 that every rank increments atomically to claim the next item.

    ``MPI_Fetch_and_op`` under a shared passive-target lock: no rank waits for another to
    hand out work, and each position is claimed exactly once. Within a node (shared memory)
    and over RDMA networks (UCX) the atomic completes without rank 0's help; over plain TCP
    between nodes Open MPI may only progress it when rank 0 next calls MPI, at its next claim.
    """

    def __init__(self, comm: MPI.Comm) -> None:
        from mpi4py import MPI

        itemsize = np.dtype(np.int64).itemsize
        self._win = MPI.Win.Allocate(itemsize if comm.Get_rank() == 0 else 0, itemsize,
                                     comm=comm)
        if comm.Get_rank() == 0:
            self._win.Lock(0, MPI.LOCK_EXCLUSIVE)
            self._win.Put(np.zeros(1, np.int64), 0)
            self._win.Unlock(0)
        comm.Barrier()
        self._one = np.ones(1, np.int64)
        self._fetched = np.zeros(1, np.int64)
        self._shared_lock, self._sum = MPI.LOCK_SHARED, MPI.SUM

    def claim(self) -> int:
        """The next unclaimed position (0, 1, 2, ... across all ranks together)."""
        self._win.Lock(0, self._shared_lock)
        self._win.Fetch_and_op(self._one, self._fetched, 0, 0, self._sum)
        self._win.Unlock(0)
        return int(self._fetched[0])

    def free(self) -> None:
        """Release the window (collective: every rank calls it once it stops claiming)."""
        self._win.Free()



_log_lock = threading.Lock()


def log(placement: Placement | None, message: str) -> None:
    prefix = f"[rank {placement.rank}/{placement.size}] " if placement else ""
    with _log_lock:  # lanes log from their own threads: one write per line keeps lines whole
        sys.stdout.write(prefix + message + "\n")
        sys.stdout.flush()


