"""Limits on running a user's query: a time limit and a cap on the rows kept for display.

The time limit interrupts DuckDB from a timer thread (``con.interrupt()``), so a runaway cross
join or a slow scan of a remote store ends with a one-line error instead of holding the
terminal. The row cap keeps the first ``max_rows`` rows and only counts the rest, batch by batch,
so showing the head of a huge result costs little memory; the count says what was left out.
"""

from __future__ import annotations

import math
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator, Mapping

from capstore.errors import InputError, first_line

if TYPE_CHECKING:
    import duckdb
    import pyarrow

DEFAULT_TIMEOUT_S = 60.0
DEFAULT_MAX_ROWS = 10_000
MAX_TIMEOUT_S = 7 * 24 * 3600.0  # a week: more is a typo (and beyond what a timer thread takes)
BATCH_ROWS = 10_000


@dataclass
class LimitedResult:
    """The rows kept (at most ``max_rows``) and how many rows the query gave in all."""

    table: "pyarrow.Table"
    total_rows: int

    @property
    def truncated(self) -> bool:
        return self.table.num_rows < self.total_rows

    def note(self, hint: str = "use --out FILE for all") -> str:
        """``(12 rows)``, or ``(showing 10,000 of 123,456 rows; <hint>)`` when rows were left out."""
        if self.truncated:
            return f"(showing {self.table.num_rows:,} of {self.total_rows:,} rows; {hint})"
        return f"({self.total_rows:,} row{'s' if self.total_rows != 1 else ''})"


def check_limits(timeout: float | None, max_rows: int | None) -> tuple[float | None, int | None]:
    """Validated limits; 0 or None means no limit. Raises a one-line InputError naming the bad one."""
    if timeout is not None:
        if not isinstance(timeout, (int, float)) or not math.isfinite(timeout) or not 0 <= timeout <= MAX_TIMEOUT_S:
            raise InputError(f"--timeout {timeout}: give seconds from 0 (no limit) to {MAX_TIMEOUT_S:.0f}")
    if max_rows is not None and (isinstance(max_rows, bool) or not isinstance(max_rows, int) or max_rows < 0):
        raise InputError(f"--max-rows {max_rows}: give a whole number of rows, 0 for no limit")
    return (float(timeout) or None) if timeout is not None else None, max_rows or None


def fetch_limited(con: "duckdb.DuckDBPyConnection", sql: str, params: Mapping[str, Any] | None = None, *,
                  timeout: float | None = DEFAULT_TIMEOUT_S, max_rows: int | None = DEFAULT_MAX_ROWS
                  ) -> LimitedResult:
    """Run ``sql`` (already checked) on ``con``: at most ``max_rows`` rows kept, stopped after ``timeout`` s.

    Any DuckDB error, the time limit included, is a one-line InputError.
    """
    import duckdb
    import pyarrow as pa

    timeout, max_rows = check_limits(timeout, max_rows)
    with time_limit(con, timeout) as limit:
        try:
            result = con.execute(sql, dict(params) if params else None)
            if max_rows is None:
                table = result.to_arrow_table()
                return LimitedResult(table, table.num_rows)
            reader = result.to_arrow_reader(BATCH_ROWS)
            kept: list[pa.RecordBatch] = []
            total = 0
            for batch in reader:
                if total < max_rows:
                    kept.append(batch.slice(0, max_rows - total))
                total += batch.num_rows
            return LimitedResult(pa.Table.from_batches(kept, schema=reader.schema), total)
        except (duckdb.Error, pa.ArrowException, OSError) as exc:
            # An interrupted Arrow stream surfaces as a pyarrow error carrying DuckDB's message.
            if limit.fired:
                raise InputError(f"query stopped after the {timeout:g} s time limit "
                                 "(raise it with --timeout, or narrow the query)") from exc
            raise InputError(f"SQL error: {first_line(exc)}") from exc


class _Limit:
    fired = False


@contextmanager
def time_limit(con: "duckdb.DuckDBPyConnection", seconds: float | None) -> Iterator[_Limit]:
    """Interrupt ``con`` if the block runs longer than ``seconds``; ``.fired`` says whether it did.

    The interrupt never lands after the block has ended (a lock orders the two), so a connection
    reused for the next query is never interrupted by an old timer.
    """
    limit = _Limit()
    if not seconds:
        yield limit
        return
    lock = threading.Lock()
    done = False

    def fire() -> None:
        with lock:
            if not done:
                limit.fired = True
                con.interrupt()

    timer = threading.Timer(seconds, fire)
    timer.daemon = True
    timer.start()
    try:
        yield limit
    finally:
        with lock:
            done = True
        timer.cancel()


