"""Re-running a whole transaction when the database aborted it for a reason that passes.

PostgreSQL aborts one of two transactions that wait on each other (``deadlock detected``) or that
cannot be serialised; SQLite answers ``database is locked`` when its busy timeout runs out. Each
leaves nothing written (the transaction is rolled back), so the same unit of work can simply run
again, after a short, growing, jittered pause so that the contenders do not collide again.
Connection errors are NOT retried: a commit whose answer was lost may have happened.
"""

from __future__ import annotations

import random
import time
from typing import Callable, TypeVar

from sqlalchemy.exc import DBAPIError

T = TypeVar("T")

ATTEMPTS = 8
FIRST_PAUSE_S = 0.02
MAX_PAUSE_S = 2.0

# SQLSTATEs of PostgreSQL's "transaction rollback" errors that a re-run can get past.
_PG_TRANSIENT = {"40P01": "deadlock detected", "40001": "serialization failure", "55P03": "lock not available"}
_SQLITE_TRANSIENT = ("database is locked", "database table is locked", "database is busy")

# Transactions re-run in this process so far (tests check that lock order, not retries, keeps the
# workers' commits apart).
retried = 0


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` aborted a transaction that can be run again as it was."""
    if not isinstance(exc, DBAPIError) or exc.connection_invalidated:
        return False
    code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    if code in _PG_TRANSIENT:
        return True
    message = str(exc.orig).lower()
    return type(exc.orig).__module__.startswith("sqlite3") and any(m in message for m in _SQLITE_TRANSIENT)


def retry_transient(unit: Callable[[], T], attempts: int = ATTEMPTS) -> T:
    """Call ``unit`` (a whole transaction) until it does not fail transiently; at most ``attempts`` times."""
    for attempt in range(1, attempts + 1):
        try:
            return unit()
        except DBAPIError as exc:
            if attempt == attempts or not is_transient(exc):
                raise
            global retried
            retried += 1
            pause = min(MAX_PAUSE_S, FIRST_PAUSE_S * 2 ** (attempt - 1))
            time.sleep(pause * random.uniform(0.5, 1.5))
    raise AssertionError("unreachable")
