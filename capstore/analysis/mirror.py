"""The analysis mirror: a DuckDB file that ``sql``, ``report`` and ``export`` read instead of the store.

Reading a SQLite or PostgreSQL store through DuckDB's scanners reads whole tables (no filter reaches
SQLite; every text goes through the wire from PostgreSQL). The mirror is a columnar copy of the
store's tables in a DuckDB file, kept up to date incrementally before each query
(``capstore.analysis.mirror_sync``): a sync that finds nothing new costs milliseconds. It is a cache,
never the source of truth: delete it and the next query builds it again; a store of another schema
revision gets a new one.

Where it lives: beside a SQLite store (``capstore.db.analysis.duckdb``), or in the user's cache
folder (``$CAPSTORE_CACHE_DIR``, else ``$XDG_CACHE_HOME/capstore/analysis``, else
``~/.cache/capstore/analysis``) for a PostgreSQL store — keyed by its URL, schema and revision — and
for a SQLite store whose folder cannot be written. ``--analysis PATH`` (or ``CAPSTORE_ANALYSIS``)
names another file; ``off`` reads the store directly through the scanners as before.

Concurrency: a sync holds an exclusive lock (``<mirror>.lock``, ``flock``) and opens the file
read-write; readers take the lock shared just long enough to attach the file read-only (DuckDB's own
file lock then keeps a writer out while they read). A sync waits for readers to close it; if they do
not within ``READERS_WAIT_S`` (a long-lived notebook connection), the query reads the store directly
and says so. Each sync is one DuckDB transaction: a sync that dies leaves the previous state.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from sqlalchemy import text
from sqlalchemy.engine import make_url

from capstore.analysis.mirror_source import SOURCE, open_source, quote_ident
from capstore.analysis.mirror_sync import (MIRROR_FORMAT, SyncReport, mirrored_tables,
                                           read_state, reset_mirror, sync_tables, write_state)
from capstore.errors import StoreError
from capstore.store.engine import Store
from capstore.store.sqlite_files import read_head

if TYPE_CHECKING:
    import duckdb

ANALYSIS_ENV = "CAPSTORE_ANALYSIS"
CACHE_ENV = "CAPSTORE_CACHE_DIR"
OFF = "off"
MIRROR_CATALOG = "analysis"
SYNC_LOCK_WAIT_S = 300.0  # another process's sync of a large change takes a while: wait for it
READERS_WAIT_S = 5.0  # readers holding the file open: after this, read the store directly instead
_POLL_S = 0.02


class MirrorBusy(StoreError):
    """The mirror could not be brought up to date now (readers kept it open, or its folder is read-only)."""


@dataclass
class MirrorInfo:
    """Where a query's rows came from: ``path`` (None: the store directly), the sync's report, a note."""

    path: Path | None
    report: SyncReport | None = None
    note: str | None = None
    columns: dict[str, list[str]] | None = None  # the mirrored tables' columns (from the mirror's state)


def mirror_path(store: Store, analysis: str | os.PathLike[str] | None = None, revision: str | None = None) -> Path | None:
    """The mirror file of ``store`` (``analysis`` or ``$CAPSTORE_ANALYSIS`` overrides; ``off``: None)."""
    choice = str(analysis) if analysis is not None else os.environ.get(ANALYSIS_ENV, "")
    if choice.strip().lower() == OFF:
        return None
    if choice:
        return Path(choice).expanduser().resolve()
    if store.dialect == "sqlite":
        database = make_url(store.url).database
        if database and database != ":memory:":
            path = Path(database)
            beside = path.with_name(path.name + ".analysis.duckdb")
            if os.access(path.parent, os.W_OK | os.X_OK) and (not beside.exists() or os.access(beside, os.W_OK)):
                return beside
    return cache_dir() / f"{_store_key(store)}-{(revision or _revision(store))[:12]}.duckdb"


def cache_dir() -> Path:
    """The folder of mirrors that do not sit beside their store."""
    base = os.environ.get(CACHE_ENV) or os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / ("" if os.environ.get(CACHE_ENV) else "capstore") / "analysis"


def _store_key(store: Store) -> str:
    from capstore.analysis.duckdb_store import pg_schema

    where = store.display_url if store.dialect != "postgresql" else f"{store.display_url}#{pg_schema(store)}"
    return hashlib.sha256(where.encode()).hexdigest()[:16]


def _revision(store: Store) -> str:
    from capstore.store.migrate import current_revision

    return current_revision(store) or "empty"


# -- locking -----------------------------------------------------------------------------------


@contextmanager
def _locked(path: Path, exclusive: bool, wait_s: float) -> Iterator[None]:
    """``flock`` on ``<mirror>.lock``: exclusive for a sync, shared for a reader's attach."""
    lock_path = path.with_name(path.name + ".lock")
    try:
        import fcntl
    except ImportError:  # not POSIX: one at a time
        from filelock import FileLock, Timeout

        try:
            with FileLock(str(lock_path), timeout=wait_s):
                yield
        except Timeout as exc:
            raise MirrorBusy(f"analysis mirror {path} is locked by another process") from exc
        return
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, mode | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise MirrorBusy(f"analysis mirror {path} is being synced by another process") from None
                time.sleep(_POLL_S)
        yield
    finally:
        os.close(fd)  # releases the lock


# -- the store's identity and change marker ----------------------------------------------------


def store_identity(store: Store, schema: str, revision: str) -> str:
    """What the mirror must have been built from: format, store, schema revision and its first dataset
    (a store file replaced by another at the same path gets a new mirror)."""
    with store.engine.connect() as conn:
        first = conn.execute(text("SELECT id, name, created_at FROM datasets ORDER BY id LIMIT 1")).first()
    born = "-" if first is None else f"{first[0]}:{first[1]}:{str(first[2])[:19]}"
    return f"{MIRROR_FORMAT}|{store.dialect}|{_store_key(store)}|{schema}|{revision}|{born}"


def change_marker(store: Store) -> str | None:
    """A cheap marker that changes whenever a transaction commits in the store; None when unknown.

    SQLite (https://sqlite.org/walformat.html): the database file's size, modification time and
    header; while the WAL holds frames, its size and header (salts change when it restarts) and the
    WAL index header's last valid frame and its checksum. File times of the WAL and index are left out:
    every process that opens the store creates them anew. PostgreSQL: the server's next transaction
    id (``xmax`` of ``pg_current_snapshot()``, moved by any write on the server); a snapshot with
    writes in flight is never taken as unchanged.
    """
    if store.dialect == "sqlite":
        database = make_url(store.url).database
        if not database:
            return None
        # Read through descriptors that stay open: closing one would drop this process's SQLite locks.
        try:
            st = os.stat(database)
        except OSError:
            return None
        head = read_head(database, 100)
        if head is None:
            return None
        parts = [f"db:{st.st_size}:{st.st_mtime_ns}:{head[24:28].hex()}{head[92:100].hex()}"]
        wal = read_head(database + "-wal", 32) or b""
        try:
            wal_size = os.stat(database + "-wal").st_size if wal else 0
        except OSError:
            wal_size = 0
        if wal_size:
            index = read_head(database + "-shm", 48) or b""
            # The index's last frame, page count, frame checksum and salts (not its change counter,
            # which is reset whenever a connection rebuilds the index from the WAL).
            parts.append(f"wal:{wal_size}:{wal.hex()}:{index[16:40].hex()}")
        return "|".join(parts)
    with store.engine.connect() as conn:
        snapshot = str(conn.execute(text("SELECT pg_current_snapshot()::text")).scalar())
    _xmin, xmax, xip = snapshot.split(":")
    return None if xip else f"pg:{xmax}"


# -- syncing -----------------------------------------------------------------------------------


def _connect_writer(path: Path) -> "duckdb.DuckDBPyConnection":
    """The mirror file opened read-write; MirrorBusy while readers hold it open."""
    import duckdb

    deadline = time.monotonic() + READERS_WAIT_S
    while True:
        try:
            con = duckdb.connect(str(path), config={"autoinstall_known_extensions": "false",
                                                    "autoload_known_extensions": "false"})
            con.execute("SET TimeZone = 'UTC'")
            return con
        except duckdb.Error as exc:
            message = str(exc)
            if "lock" not in message.lower() and "conflict" not in message.lower():
                raise
            # A connection of this very process holds it (DuckDB refuses a second handle at once): no use waiting.
            if "unique file handle" in message.lower() or time.monotonic() > deadline:
                raise MirrorBusy(f"analysis mirror {path} is open in another process or connection "
                                 f"({message.splitlines()[0][:200]})") from exc
            time.sleep(0.05)


def sync_mirror(store: Store, path: Path) -> SyncReport:
    """Bring the mirror at ``path`` up to date with ``store`` (build it if missing, stale or foreign)."""
    from capstore.analysis.duckdb_store import _attach, pg_schema

    import duckdb

    path.parent.mkdir(parents=True, exist_ok=True)
    schema = pg_schema(store) if store.dialect == "postgresql" else "main"
    revision = _revision(store)
    if not path.exists():
        _remove_other_revisions(store, path)
    with _locked(path, exclusive=True, wait_s=SYNC_LOCK_WAIT_S):
        marker = change_marker(store)
        try:
            w = _connect_writer(path)
        except MirrorBusy:
            raise
        except duckdb.Error:  # a damaged file: it is only a cache
            _remove(path)
            w = _connect_writer(path)
        try:
            identity = store_identity(store, schema, revision)
            state = read_state(w)
            if state is not None and state.get("identity") == identity and marker and state.get("marker") == marker:
                return SyncReport()
            rebuild = state is None or state.get("identity") != identity or "columns" not in state
            if store.dialect != "sqlite":
                _attach(w, store)
            elif rebuild:  # the tables' types as the scanner reads them, read in a child process (sqlite_scan)
                from capstore.analysis.sqlite_scan import store_tables, typed_stand_in

                database = str(make_url(store.url).database)
                typed_stand_in(w, database, store_tables(database))
            columns = _store_columns(w, schema) if rebuild else state["columns"]  # type: ignore[index]
            started = time.perf_counter()
            report = _sync(w, store, schema, identity, None if rebuild else state, columns, marker)
            w.execute("CHECKPOINT")  # readers then open a file with no log to replay
            report.checkpoint_seconds = time.perf_counter() - started - report.seconds
            return report
        finally:
            w.close()


def _sync(w: "duckdb.DuckDBPyConnection", store: Store, schema: str, identity: str, state: dict[str, Any] | None,
          columns: dict[str, list[str]], marker: str | None) -> SyncReport:
    """One sync as one DuckDB transaction (a sync that fails leaves the mirror as it was)."""
    rebuilt = state is None
    if rebuilt:
        state = {"identity": identity, "tables": {}}
        reset_mirror(w, schema, columns)
    assert state is not None
    w.execute("BEGIN TRANSACTION")
    try:
        with open_source(store, schema) as source:
            report = sync_tables(w, source, state, columns)
        state["marker"] = marker
        state["columns"] = {t: cols for t, cols in columns.items() if t in mirrored_tables(columns)}
        write_state(w, state)
        w.execute("COMMIT")
    except BaseException:
        w.execute("ROLLBACK")
        raise
    report.rebuilt = rebuilt
    return report


def _store_columns(w: "duckdb.DuckDBPyConnection", schema: str) -> dict[str, list[str]]:
    rows = w.execute("SELECT table_name, column_name FROM duckdb_columns() WHERE database_name = ? AND schema_name = ? "
                     "ORDER BY table_name, column_index", [SOURCE, schema]).fetchall()
    columns: dict[str, list[str]] = {}
    for table, column in rows:
        columns.setdefault(table, []).append(column)
    return columns


def _remove_other_revisions(store: Store, path: Path) -> None:
    """A new mirror in the cache folder replaces the store's mirrors of older schema revisions."""
    if path.parent != cache_dir():
        return
    for old in path.parent.glob(f"{_store_key(store)}-*.duckdb"):
        if old != path:
            try:
                with _locked(old, exclusive=True, wait_s=0.0):
                    _remove(old)
            except MirrorBusy:
                pass  # someone still reads it: left for the next time


def _remove(path: Path) -> None:
    for suffix in ("", ".wal"):
        try:
            path.with_name(path.name + suffix).unlink()
        except FileNotFoundError:
            pass


# -- reading -----------------------------------------------------------------------------------


def attach_for_reading(con: "duckdb.DuckDBPyConnection", store: Store, path: Path) -> MirrorInfo:
    """Attach the mirror read-only to ``con`` as ``analysis``, synced first if the store changed since.

    Raises MirrorBusy when it cannot be synced now (the caller reads the store directly instead).
    """
    import duckdb

    marker = change_marker(store)
    if marker is not None and path.exists():
        try:
            _attach_read_only(con, path)
        except (duckdb.Error, MirrorBusy):
            pass
        else:
            state = _attached_state(con)
            if state.get("marker") == marker and str(state.get("identity", "")).startswith(f"{MIRROR_FORMAT}|"):
                return MirrorInfo(path, columns=state.get("columns"))
            con.execute(f"DETACH {MIRROR_CATALOG}")  # this process may not hold it open while syncing
    report = sync_mirror(store, path)
    try:
        _attach_read_only(con, path)
    except duckdb.Error as exc:
        raise MirrorBusy(f"cannot open analysis mirror {path}: {str(exc).splitlines()[0][:200]}") from exc
    return MirrorInfo(path, report, columns=_attached_state(con).get("columns"))


def _attach_read_only(con: "duckdb.DuckDBPyConnection", path: Path) -> None:
    with _locked(path, exclusive=False, wait_s=SYNC_LOCK_WAIT_S):
        con.execute(f"ATTACH {_literal(str(path))} AS {MIRROR_CATALOG} (READ_ONLY)")


def _attached_state(con: "duckdb.DuckDBPyConnection") -> dict[str, Any]:
    """The state recorded in the attached mirror ({} for a file that has none)."""
    import duckdb

    try:
        row = con.execute(f"SELECT value FROM {MIRROR_CATALOG}.main._capstore_mirror WHERE key = 'state'").fetchone()
    except duckdb.Error:
        return {}
    return json.loads(row[0]) if row else {}


def mirror_views(con: "duckdb.DuckDBPyConnection", columns_by_table: dict[str, list[str]]) -> None:
    """``store.<table>`` views over the mirror's tables: the store's columns, without the mirror's own
    (``_rowid``, and the texts it keeps inline), and ``derived.<table>`` views with the texts inline."""
    for table in mirrored_tables(columns_by_table):
        cols = ", ".join(quote_ident(c) for c in columns_by_table[table] if not c.startswith("_"))
        con.execute(f"CREATE VIEW store.{quote_ident(table)} AS SELECT {cols} FROM {MIRROR_CATALOG}.main.{quote_ident(table)}")
    for table, (sql, _direct) in DERIVED_VIEWS.items():
        names = ", ".join(f"d.{quote_ident(c)}" for c in columns_by_table.get(table, []))
        con.execute(f"CREATE VIEW derived.{quote_ident(table)} AS SELECT {names}, {sql} "
                    f"FROM {MIRROR_CATALOG}.main.{quote_ident(table)} d")


def direct_derived_views(con: "duckdb.DuckDBPyConnection") -> None:
    """The ``derived.<table>`` views when the store is read directly: the same columns, by joins."""
    for table, (_mirrored, sql) in DERIVED_VIEWS.items():
        con.execute(f"CREATE VIEW derived.{quote_ident(table)} AS {sql}")


# table -> (the derived columns from the mirror's own, the same view over the store directly)
DERIVED_VIEWS: dict[str, tuple[str, str]] = {
    "candidates": ("d._text AS text",
                   "SELECT c.*, t.text FROM store.candidates c JOIN store.texts t ON t.sha256 = c.text_sha"),
    "captions": ("d._text AS text",
                 "SELECT c.*, t.text FROM store.captions c JOIN store.texts t ON t.sha256 = c.text_sha"),
    "references": ("d._text AS text",
                   'SELECT r.*, t.text FROM store."references" r JOIN store.texts t ON t.sha256 = r.text_sha'),
    "candidate_eval_values": ("d._run_id AS run_id, d._item_id AS item_id, d._iteration AS iteration",
                              "SELECT v.*, c.run_id, c.item_id, c.iteration FROM store.candidate_eval_values v "
                              "JOIN store.candidates c ON c.id = v.candidate_id"),
    "iteration_states": ("d._best_text AS best_text, d._kept AS kept_count",
                         "SELECT s.*, t.text AS best_text, json_array_length(CAST(s.kept AS VARCHAR)) AS kept_count "
                         "FROM store.iteration_states s LEFT JOIN store.texts t ON t.sha256 = s.best_text_sha"),
}


def mirror_columns(con: "duckdb.DuckDBPyConnection") -> dict[str, list[str]]:
    """The mirrored tables' columns as attached (``_capstore_mirror`` and tokens left out)."""
    rows = con.execute("SELECT table_name, column_name FROM duckdb_columns() WHERE database_name = ? "
                       "AND schema_name = 'main' ORDER BY table_name, column_index", [MIRROR_CATALOG]).fetchall()
    columns: dict[str, list[str]] = {}
    for table, column in rows:
        if not table.startswith("_capstore") and table not in ("text_tokens", "token_words") \
                and not column.startswith("_"):  # the mirror's own columns (rowid, derived texts)
            columns.setdefault(table, []).append(column)
    return {t: c for t, c in columns.items() if t in mirrored_tables(columns)}


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"
