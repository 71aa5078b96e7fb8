"""Reading the store for the analysis mirror: control queries in one snapshot, rows into DuckDB.

SQLite: every read of one sync runs in ONE read transaction on a connection of the store's own
engine (same read-only mode, busy timeout), so fingerprints, watermarks and rows all come from one
snapshot. Rows are fetched by Python's sqlite3 and handed to DuckDB as Arrow tables: DuckDB's SQLite
scanner pushes no filter down (a ``WHERE id > …`` would read the whole table) and its
``sqlite_query`` returns text, which rounds doubles to 15 digits; Python's driver keeps every bit.
A large first copy goes through the scanner instead (parallel, typed), in a child process
(``sqlite_scan``: the scanner's own SQLite library must not open the store in this process).

PostgreSQL: control queries run through SQLAlchemy in a ``REPEATABLE READ READ ONLY`` transaction
(one snapshot, recorded with ``pg_current_snapshot()``); rows come through DuckDB's PostgreSQL
scanner, which pushes filters down and reads in binary ``COPY``, in a later snapshot (a superset:
the sync de-duplicates by key, see ``mirror_sync``).
"""

from __future__ import annotations

import sqlite3
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Iterator, Sequence

from sqlalchemy import text

from capstore.store.engine import Store

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa

SOURCE = "capstore_db"  # the store's catalog in the sync's DuckDB connection
FETCH_ROWS = 200_000  # rows per Arrow batch from SQLite


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class SqliteSource:
    """A SQLite store read in one read transaction."""

    dialect = "sqlite"

    def __init__(self, store: Store) -> None:
        self.store = store
        self._raw = store.engine.raw_connection()
        self.conn: sqlite3.Connection = self._raw.driver_connection  # type: ignore[assignment]
        self.conn.execute("BEGIN")
        self.conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()  # the snapshot starts here

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self.conn.execute(sql, tuple(params)).fetchall()

    def stage_scanned(self, w: "duckdb.DuckDBPyConnection", stage: str, table: str, columns: Sequence[str],
                      types: Sequence[str], where: str = "") -> int:
        """Like ``stage`` (``where`` in DuckDB's SQL, values inline), read by DuckDB's SQLite scanner in a
        child process: for large copies. The child reads in its own, later snapshot."""
        import tempfile
        from pathlib import Path

        from sqlalchemy.engine import make_url

        from capstore.analysis.sqlite_scan import scan_to_parquet

        cols = ", ".join(quote_ident(c) for c in columns)
        _create_stage(w, stage, columns, types)
        with tempfile.TemporaryDirectory(prefix="capstore-scan-") as tmp:
            files = scan_to_parquet(str(make_url(self.store.url).database),
                                    {"rows": f"SELECT {cols} FROM {SOURCE}.main.{quote_ident(table)} {where}"}, Path(tmp))
            w.execute(f"INSERT INTO {stage} SELECT {cols} FROM read_parquet('{str(files['rows']).replace(chr(39), chr(39) * 2)}')")
        return int(w.execute(f"SELECT count(*) FROM {stage}").fetchone()[0])  # type: ignore[index]

    def stage(self, w: "duckdb.DuckDBPyConnection", stage: str, table: str, columns: Sequence[str],
              types: Sequence[str], where: str = "", params: Sequence[Any] = ()) -> int:
        """Create temp table ``stage`` (``columns`` typed as ``types``) from ``SELECT … FROM table WHERE …``
        (``where`` in SQLite's SQL); a ``_rowid`` column gets SQLite's rowid."""
        select = ", ".join("rowid" if c == "_rowid" else quote_ident(c) for c in columns)
        cursor = self.conn.execute(f"SELECT {select} FROM {quote_ident(table)} {where}", tuple(params))
        _create_stage(w, stage, columns, types)
        total = 0
        while True:
            batch = cursor.fetchmany(FETCH_ROWS)
            if not batch:
                break
            arrow = _to_arrow(batch, columns, types)
            w.register("_capstore_batch", arrow)
            try:
                w.execute(f"INSERT INTO {stage} SELECT * FROM _capstore_batch")
            finally:
                w.unregister("_capstore_batch")
            total += len(batch)
        return total

    def close(self) -> None:
        try:
            self.conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass
        self._raw.close()


class PostgresSource:
    """A PostgreSQL store: control reads in one snapshot, rows through the DuckDB scanner."""

    dialect = "postgresql"

    def __init__(self, store: Store, schema: str) -> None:
        self.store = store
        self.schema = schema
        self._conn = store.engine.connect()
        self._conn.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        row = self._conn.execute(text("SELECT pg_current_snapshot()::text")).one()
        self.snapshot = str(row[0])

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        # Control SQL is written with SQLite's "?" placeholders; psycopg takes %s.
        return [tuple(r) for r in self._conn.exec_driver_sql(sql.replace("%", "%%").replace("?", "%s"),
                                                             tuple(params)).all()]

    def stage(self, w: "duckdb.DuckDBPyConnection", stage: str, table: str, columns: Sequence[str],
              types: Sequence[str], where: str = "", params: Sequence[Any] = ()) -> int:
        """Create temp table ``stage`` from the scanner's rows of ``table`` (``where`` in DuckDB SQL, pushed down)."""
        cols = ", ".join("NULL" if c == "_rowid" else quote_ident(c) for c in columns)
        source = f"{SOURCE}.{quote_ident(self.schema)}.{quote_ident(table)}"
        _create_stage(w, stage, columns, types)
        w.execute(f"INSERT INTO {stage} SELECT {cols} FROM {source} {where}", list(params))
        return int(w.execute(f"SELECT count(*) FROM {stage}").fetchone()[0])  # type: ignore[index]

    def stage_query(self, w: "duckdb.DuckDBPyConnection", stage: str, columns: Sequence[str], types: Sequence[str],
                    sql: str) -> int:
        """Create temp table ``stage`` from a PostgreSQL query run on the server (``postgres_query``)."""
        _create_stage(w, stage, columns, types)
        cols = ", ".join("NULL" if c == "_rowid" else quote_ident(c) for c in columns)
        literal = "'" + sql.replace("'", "''") + "'"
        w.execute(f"INSERT INTO {stage} SELECT {cols} FROM postgres_query('{SOURCE}', {literal})")
        return int(w.execute(f"SELECT count(*) FROM {stage}").fetchone()[0])  # type: ignore[index]

    def close(self) -> None:
        try:
            self._conn.rollback()
        finally:
            self._conn.close()


Source = SqliteSource | PostgresSource


@contextmanager
def open_source(store: Store, pg_schema: str | None) -> Iterator[Source]:
    """The store read for one sync."""
    source: Source = (SqliteSource(store) if store.dialect == "sqlite"
                      else PostgresSource(store, pg_schema or "public"))
    try:
        yield source
    finally:
        source.close()


def _create_stage(w: "duckdb.DuckDBPyConnection", stage: str, columns: Sequence[str], types: Sequence[str]) -> None:
    body = ", ".join(f"{quote_ident(c)} {t}" for c, t in zip(columns, types))
    w.execute(f"CREATE OR REPLACE TEMP TABLE {stage} ({body})")


_ARROW = {"BIGINT": "int64", "INTEGER": "int64", "DOUBLE": "float64", "FLOAT": "float64", "BOOLEAN": "bool_"}


def _to_arrow(batch: list[tuple[Any, ...]], columns: Sequence[str], types: Sequence[str]) -> "pa.Table":
    """Rows as an Arrow table: numbers typed exactly, everything else as text (DuckDB casts it on insert)."""
    import pyarrow as pa

    arrow_types = [getattr(pa, _ARROW.get(t, "string"))() for t in types]
    try:  # the rows as they come (tuples into one struct array): 5x faster than transposing them in Python
        return pa.Table.from_struct_array(pa.array(batch, type=pa.struct(list(zip(columns, arrow_types)))))
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        pass
    arrays = []
    for values, arrow_type in zip(zip(*batch), arrow_types):
        try:
            arrays.append(pa.array(values, type=arrow_type))
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            # SQLite stores what it is given: a value of another type than declared goes through as text.
            arrays.append(pa.array([None if v is None else str(v) for v in values], type=pa.string()))
    return pa.table(arrays, names=list(columns))
