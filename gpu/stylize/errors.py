"""Errors that end the job, and the exit statuses they end it with."""

from __future__ import annotations

FAULT_EXIT_CODE = 17
"""Exit status of a rank stopped by ``--fault-rank`` (fault injection for tests)."""

INPUT_ERROR_EXIT_CODE = 2


class JobInputError(Exception):
    """The job folder, the model or an option is unusable; the message says what and where.

    Attributes:
        on_every_rank: Every rank raises this same error (rank 0 found it and broadcast it),
            so the ranks can all exit without aborting one another.
    """

    def __init__(self, message: str, on_every_rank: bool = False) -> None:
        super().__init__(message)
        self.on_every_rank = on_every_rank


class CompileError(RuntimeError):
    """``torch.compile`` failed on the warm-up batch (the job does not fall back to eager)."""

