"""Keep the local GPU job from outliving the flow: each process dies with its parent.

Open MPI gives every rank its own process group, so when ``mpiexec`` is killed outright
(SIGKILL, or because the flow's process died) nothing takes its ranks down: they run on as
orphans, holding cores, memory and the work folder. So the local backend starts ``mpiexec``
and each rank through this module, which asks the kernel to SIGKILL the process when its parent
exits (``PR_SET_PDEATHSIG``, which survives ``exec``) and then becomes the real program::

    python -m tasks.compute.orphan_guard --exec PARENT_PID mpiexec -n 2 ... \\
        python -m tasks.compute.orphan_guard gpu.stylize --input IN --output OUT ...

The flow's process dying kills ``mpiexec``; ``mpiexec`` dying kills every rank; a rank's FFmpeg
children end when their pipes close.

Standard library only, and nothing else from ``tasks``: it starts every rank.
"""

from __future__ import annotations

import ctypes
import os
import runpy
import signal
import sys

PR_SET_PDEATHSIG = 1
LAUNCHERS = frozenset(
    {"mpiexec", "mpirun", "prterun", "orterun", "prted", "orted", "hydra_pmi_proxy"}
)
"""Process names of the launchers and daemons that start ranks (Open MPI, MPICH)."""
ORPHANED_EXIT_CODE = 128 + signal.SIGKILL
"""Exit status of a process whose parent was gone before the guard was set: as if killed."""


def die_with_parent() -> None:
    """Have the kernel SIGKILL this process when its parent exits (Linux only).

    Raises:
        OSError: ``prctl`` refused.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"prctl(PR_SET_PDEATHSIG): {os.strerror(errno)}")


def parent_name() -> str:
    """The command name of this process's parent, or "" where ``/proc`` cannot tell."""
    try:
        with open(f"/proc/{os.getppid()}/comm") as fh:
            return fh.read().strip()
    except OSError:
        return ""


def main(argv: list[str]) -> None:
    """``--exec PARENT_PID PROGRAM ARGS...`` or ``MODULE ARGS...``; see the module docstring."""
    guarded = sys.platform.startswith("linux")
    if argv[:1] == ["--exec"] and len(argv) >= 3:
        if guarded:
            die_with_parent()
            # The parent may have died before the guard was set; then it would never fire.
            if os.getppid() != int(argv[1]):
                sys.exit(ORPHANED_EXIT_CODE)
        os.execv(argv[2], argv[2:])
    if not argv or argv[0].startswith("-"):
        sys.exit("usage: python -m tasks.compute.orphan_guard "
                 "[--exec PARENT_PID PROGRAM | MODULE] [ARGS...]")
    if guarded:
        die_with_parent()
        if parent_name() not in LAUNCHERS:  # the launcher died before the guard was set
            sys.exit(ORPHANED_EXIT_CODE)
    sys.argv = list(argv)
    runpy.run_module(argv[0], run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
