"""Data parallelism for ``gpu.train``: this process's MPI rank, gradient averaging, its device.

Outside an MPI launcher the process is a single rank and nothing imports mpi4py.
"""

from __future__ import annotations

import os

import torch

# Environment variables that the MPI launchers we support set in every rank.
MPI_ENV_MARKERS = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK")


class Ranks:
    """This process's place among MPI ranks; a single process when not under an MPI launcher."""

    def __init__(self) -> None:
        self.comm = None
        self.rank, self.size, self.local_rank, self.local_size = 0, 1, 0, 1
        if any(marker in os.environ for marker in MPI_ENV_MARKERS):
            from mpi4py import MPI

            self.comm = MPI.COMM_WORLD
            self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
            node = self.comm.Split_type(MPI.COMM_TYPE_SHARED)
            self.local_rank, self.local_size = node.Get_rank(), node.Get_size()
            node.Free()

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    def average(self, tensors: list[torch.Tensor]) -> None:
        """Average ``tensors`` in place across ranks with one CPU-side Allreduce."""
        if self.comm is None:
            return
        from mpi4py import MPI

        flat = torch.cat([t.detach().reshape(-1).float() for t in tensors]).cpu().numpy()
        self.comm.Allreduce(MPI.IN_PLACE, flat, op=MPI.SUM)
        flat /= self.size
        offset = 0
        for tensor in tensors:
            chunk = torch.from_numpy(flat[offset:offset + tensor.numel()])
            tensor.copy_(chunk.view_as(tensor))
            offset += tensor.numel()

    def barrier(self) -> None:
        if self.comm is not None:
            self.comm.Barrier()


def pick_device(choice: str, ranks: Ranks) -> torch.device:
    """The device for ``--device choice``: one GPU per rank of a node, or the CPU."""
    if choice == "cpu" or (choice == "auto" and not torch.cuda.is_available()):
        if ranks.local_size > 1:
            # Ranks sharing a CPU would otherwise each start one thread per core.
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // ranks.local_size))
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RuntimeError("--device cuda requested but CUDA is not available")
    return torch.device("cuda", ranks.local_rank % torch.cuda.device_count())
