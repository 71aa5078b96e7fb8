"""Row ids and seeds as the store holds them: 64-bit integers, checked before they reach a query."""

from __future__ import annotations

from capstore.errors import InputError

MAX_INT64 = 2**63 - 1  # the largest value of a BIGINT column (and of SQLite's INTEGER)


def check_run_id(run_id: int, what: str = "run id") -> int:
    """``run_id`` if it can be a run of some store (1 to 2**63-1), else a one-line InputError.

    A larger number would make the database driver overflow (a traceback, not an answer).
    """
    if isinstance(run_id, bool) or not isinstance(run_id, int) or not 1 <= run_id <= MAX_INT64:
        raise InputError(f"{what} {run_id}: expected a run id from 1 to {MAX_INT64}")
    return run_id
