"""One DuckDB connection over the store's analysis mirror, shared by the server's requests.

Opening a connection (``duckdb_store.open_analysis``: sync the mirror if the store changed, attach it,
make the views) costs ~50 ms, a third of a page's budget, so requests share one and each reads
through its own cursor (DuckDB cursors may run in parallel threads; an interrupt stops only its own).
The connection is reopened, and so the mirror synced, when the store's change marker moves (workers
committed); a sync needs this process to hold the mirror open nowhere, so a reopen waits for the
requests in flight. It is closed after ``idle_close_s`` without requests: another process's sync
(``capstore sql`` after a worker wrote) waits for readers to let the mirror go, and it should not wait
on a server nobody is looking at.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Iterator

from capstore.analysis.sql_limits import fetch_limited
from capstore.store.engine import Store

if TYPE_CHECKING:
    import duckdb

    from capstore.analysis.queries import Query

IDLE_CLOSE_S = 2.0
PAGE_TIMEOUT_S = 30.0  # a page's own queries: far above what they take, so a stuck scan still ends
MEMO_ENTRIES = 256
# A store whose change cannot be told (PostgreSQL with transactions in flight) is synced at most this often.
UNKNOWN_MARKER_REUSE_S = 1.0


@lru_cache(maxsize=None)
def shipped_query(name: str) -> "Query":
    """A shipped ``sql/`` query (read once per process)."""
    from capstore.analysis.queries import load_query

    return load_query(name)


@dataclass
class Reader:
    """A request's cursor, and the shipped queries' results already computed for the same store state
    (``memo``; None when the state cannot be told, e.g. PostgreSQL with transactions in flight)."""

    cursor: "duckdb.DuckDBPyConnection"
    memo: "OrderedDict[Any, list[dict[str, Any]]] | None" = None
    lock: threading.Lock = field(default_factory=threading.Lock)  # the memo is shared by requests

    def rows(self, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """``sql``'s rows as dicts, stopped after ``PAGE_TIMEOUT_S``."""
        return fetch_limited(self.cursor, sql, params, timeout=PAGE_TIMEOUT_S, max_rows=None).table.to_pylist()

    def shipped(self, name: str, **params: Any) -> list[dict[str, Any]]:
        """Rows of the shipped query ``name`` with these declared parameters (the others NULL).

        Shipped queries aggregate whole tables (``iteration_curve`` reads every candidate metric), so
        their rows are kept until the store changes: a page read twice computes them once.
        """
        from capstore.analysis.queries import bind_params

        key = (name, tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in params.items())))
        if self.memo is not None:
            with self.lock:
                if key in self.memo:
                    self.memo.move_to_end(key)
                    return [dict(r) for r in self.memo[key]]
        query = shipped_query(name)
        found = self.rows(query.text, bind_params(query, params))
        if self.memo is not None:
            with self.lock:
                self.memo[key] = [dict(r) for r in found]
                while len(self.memo) > MEMO_ENTRIES:
                    self.memo.popitem(last=False)
        return found


class AnalysisConnections:
    """Cursors on a shared, up-to-date analysis connection of ``store`` (``analysis``: as ``capstore sql
    --analysis``: the mirror file, ``off``, or None for the default)."""

    def __init__(self, store: Store, analysis: str | None = None, idle_close_s: float = IDLE_CLOSE_S,
                 memo: bool = True) -> None:
        self.store = store
        self.analysis = analysis
        self.idle_close_s = idle_close_s
        self.memo = memo  # keep shipped queries' rows until the store changes (off: recompute every time)
        self.note: str | None = None  # why the store is read directly (the mirror was busy), if it is
        self._cond = threading.Condition()
        self._con: "duckdb.DuckDBPyConnection | None" = None
        self._marker: str | None = None
        self._opened = 0.0
        self._users = 0
        self._reopening = False
        self._last_used = 0.0
        self._timer: threading.Timer | None = None
        self._memo: OrderedDict[Any, list[dict[str, Any]]] = OrderedDict()
        self._memo_marker: str | None = None
        self._memo_lock = threading.Lock()

    @contextmanager
    def reader(self) -> Iterator[Reader]:
        """A ``Reader`` (cursor and memo) on a connection that has seen every commit made before this call."""
        with self.cursor() as cur:
            with self._cond:
                marker = self._marker if self.note is None else None
                if marker != self._memo_marker:
                    self._memo = OrderedDict()
                    self._memo_marker = marker
                memo = self._memo if marker is not None and self.memo else None
            yield Reader(cur, memo, self._memo_lock)

    @contextmanager
    def cursor(self) -> Iterator["duckdb.DuckDBPyConnection"]:
        """A cursor on a connection that has seen every commit made before this call."""
        with self._cond:
            while self._reopening:
                self._cond.wait()
            marker = self._current_marker()
            if self._stale(marker):
                self._reopening = True
                try:
                    while self._users:
                        self._cond.wait()
                    self._reopen(marker)
                finally:
                    self._reopening = False
                    self._cond.notify_all()
            assert self._con is not None
            self._users += 1
            cursor = self._con.cursor()
        try:
            yield cursor
        finally:
            cursor.close()
            with self._cond:
                self._users -= 1
                self._last_used = time.monotonic()
                self._cond.notify_all()
            self._arm_idle_close()

    def close(self) -> None:
        """Close the shared connection (it reopens on the next request)."""
        with self._cond:
            while self._users or self._reopening:
                self._cond.wait()
            self._close_locked()

    @property
    def reads_directly(self) -> bool:
        """``--analysis off``: the user asked for the store read directly, the scanner in this process.
        Otherwise a SQLite store is only ever read through the mirror here (``open_analysis``)."""
        from capstore.analysis.mirror import OFF

        return (self.analysis or "").strip().lower() == OFF

    def _current_marker(self) -> str | None:
        from capstore.analysis.mirror import change_marker

        return change_marker(self.store)

    def _stale(self, marker: str | None) -> bool:
        if self._con is None:
            return True
        if self.note is not None:  # reading the store directly: try the mirror again once it may be free
            return time.monotonic() - self._opened > UNKNOWN_MARKER_REUSE_S
        if marker is None:
            return time.monotonic() - self._opened > UNKNOWN_MARKER_REUSE_S
        return marker != self._marker

    def _reopen(self, marker: str | None) -> None:
        from capstore.analysis.duckdb_store import open_analysis

        self._close_locked()
        # No passthrough: pages read mirrored tables only (the SQL page opens its own connection for a
        # statement that reads the caches, as ``capstore sql`` does).
        con, info = open_analysis(self.store, analysis=self.analysis, passthrough=False,
                                  sqlite_in_process=self.reads_directly)
        self._con, self._marker, self._opened = con, marker, time.monotonic()
        self.note = info.note

    def _close_locked(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None

    def _arm_idle_close(self) -> None:
        """One pending check at a time; it looks again later while requests keep coming."""
        if self.idle_close_s:
            with self._cond:
                if self._timer is None:
                    self._start_timer(self.idle_close_s)

    def _start_timer(self, seconds: float) -> None:
        self._timer = threading.Timer(seconds, self._close_if_idle)
        self._timer.daemon = True
        self._timer.start()

    def _close_if_idle(self) -> None:
        with self._cond:
            self._timer = None
            idle_for = time.monotonic() - self._last_used
            if self._users or self._reopening or idle_for < self.idle_close_s:
                if self._con is not None:
                    self._start_timer(max(self.idle_close_s - idle_for, 0.05))
                return
            self._close_locked()
