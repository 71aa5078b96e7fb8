"""Many rows into one table, fast: the write path for batches of steps and bulk loads.

SQLite: multi-row ``INSERT … VALUES (…), (…), …`` statements of up to 500 rows through the driver's
``executemany`` (one statement execution per chunk instead of per row). PostgreSQL: ``COPY``.
Values go through the columns' SQLAlchemy types first (JSON, datetimes), so rows read back exactly
as ORM-written ones.

Inside ``Store.write(bulk=True)`` SQLite skips its per-row foreign-key lookups (the dearest part of
a candidate insert: three index probes a row, one on a 64-character sha); ``insert_rows`` then
checks the references set-wise instead (each distinct run, item and text once) in the same
transaction, and raises before anything commits if one is missing.
"""

from __future__ import annotations

import json
import sqlite3
from itertools import chain
from operator import itemgetter
from typing import Any, Sequence

from sqlalchemy import Connection, Table, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from capstore.errors import StoreError

SQLITE_ROWS_PER_STATEMENT = 500
_SQLITE_MAX_PARAMS = 30_000  # SQLite allows 32,766 bound parameters per statement


class DanglingReference(StoreError):
    """Rows point at parents that do not exist (the transaction is rolled back)."""


def insert_rows(session: Session, table: Table, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> int:
    """Insert ``rows`` (tuples in ``columns`` order) into ``table`` in the session's transaction; returns the count."""
    if not rows:
        return 0
    conn = session.connection()
    if conn.dialect.name == "sqlite":
        if not conn.exec_driver_sql("PRAGMA foreign_keys").scalar():
            check_references(session, table, columns, rows)
        _sqlite_multirow(conn, table, columns, rows)
    else:
        n = len(columns)
        flat = _flat(rows, n, bind_processors(table, columns, conn.dialect))
        _copy(conn, table, columns, list(zip(*[iter(flat)] * n)))
    return len(rows)


def check_references(session: Session, table: Table, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Raise DanglingReference if a value of a single-column foreign key in ``rows`` has no parent row.

    SQLite: one query per foreign key, the distinct values passed as one JSON array (``json_each``),
    so checking 20,000 texts costs one statement, not 20,000 index probes from Python.
    """
    position = {c: i for i, c in enumerate(columns)}
    for fk in table.foreign_keys:
        column = fk.parent.name
        if column not in position:
            continue
        values = sorted(set(map(itemgetter(position[column]), rows)) - {None}, key=str)
        if not values:
            continue
        parent, key = fk.column.table.name, fk.column.name
        missing = session.execute(text(
            f'SELECT j.value FROM json_each(:values) AS j WHERE NOT EXISTS '
            f'(SELECT 1 FROM "{parent}" AS p WHERE p."{key}" = j.value)'), {"values": json.dumps(values)}).scalars().all()
        if missing:
            raise DanglingReference(f"{table.name}.{column}: {len(missing)} value(s) not in {parent}.{key}, "
                                    f"first {missing[0]!r}")


def _flat(rows: Sequence[Sequence[Any]], n: int, processors: list[tuple[int, Any]]) -> list[Any]:
    """The values of ``rows``, row after row, each as its column's type binds it.

    Processors run over extended slices (one column at a time, at C speed), so a column without one
    costs nothing.
    """
    flat = list(chain.from_iterable(rows))
    for i, process in processors:
        flat[i::n] = map(process, flat[i::n])
    return flat


def bind_processors(table: Table, columns: Sequence[str], dialect: Any) -> list[tuple[int, Any]]:
    """(position, bind processor) of the columns whose type converts values (JSON, SQLite datetimes, floats)."""
    found = [(i, table.c[c].type.dialect_impl(dialect).bind_processor(dialect)) for i, c in enumerate(columns)]
    return [(i, p) for i, p in found if p is not None]


def _sqlite_multirow(conn: Connection, table: Table, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """``INSERT … VALUES`` of many rows per statement, executemany over the full chunks.

    Chunks are flattened one at a time and streamed to the driver. A violated constraint raises
    SQLAlchemy's IntegrityError, as an ORM insert would.
    """
    n = len(columns)
    k = max(1, min(SQLITE_ROWS_PER_STATEMENT, _SQLITE_MAX_PARAMS // n))
    processors = bind_processors(table, columns, conn.dialect)
    one = "(" + ", ".join("?" * n) + ")"
    quoted = ", ".join(f'"{c}"' for c in columns)
    head = f'INSERT INTO "{table.name}" ({quoted}) VALUES '
    full = len(rows) // k * k
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    sql = head + ", ".join([one] * k)
    try:
        if full:
            cursor.executemany(sql, (_flat(rows[i:i + k], n, processors) for i in range(0, full, k)))
        if full < len(rows):
            sql = head + ", ".join([one] * (len(rows) - full))
            cursor.execute(sql, _flat(rows[full:], n, processors))
    except sqlite3.IntegrityError as exc:
        raise IntegrityError(sql[:200], None, exc) from exc
    finally:
        cursor.close()


def _copy(conn: Connection, table: Table, columns: Sequence[str], rows: list[tuple[Any, ...]]) -> None:
    """PostgreSQL ``COPY … FROM STDIN``; the server checks every constraint itself."""
    import psycopg.errors

    quote = conn.dialect.identifier_preparer.quote
    sql = f"COPY {quote(table.name)} ({', '.join(quote(c) for c in columns)}) FROM STDIN"
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        with cursor.copy(sql) as copy:
            for row in rows:
                copy.write_row(row)
    except psycopg.errors.ForeignKeyViolation as exc:  # the same error as SQLite's set-wise check
        detail = (exc.diag.message_detail or str(exc)).strip()
        raise DanglingReference(f"{table.name}: {detail}") from exc
    except psycopg.errors.IntegrityError as exc:  # as SQLAlchemy would raise it for an INSERT
        raise IntegrityError(sql, None, exc) from exc
    finally:
        cursor.close()
