"""Many rows into one table, fast: the write path for batches of steps and bulk loads.

SQLite: multi-row ``INSERT … VALUES (…), (…), …`` statements of up to 500 rows through the driver's
``executemany`` (one statement execution per chunk instead of per row). PostgreSQL: ``COPY``.
Values go through the columns' SQLAlchemy types first (JSON, datetimes), so rows read back exactly
as ORM-written ones.

Inside ``Store.write(bulk=True)`` SQLite skips its per-row foreign-key lookups (the dearest part of
a candidate insert: three index probes a row, one on a 64-character sha); ``insert_rows`` then
checks the references set-wise instead (each distinct run, item and text once) in the same
transaction, and raises before anything commits if one is missing. PostgreSQL does the same in any
transaction where the role may turn triggers off (``references_checked_setwise``): each distinct
parent is locked once, instead of once per row by the server's foreign-key triggers.
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import contextmanager
from itertools import chain
from operator import itemgetter
from typing import Any, Iterator, Sequence

from sqlalchemy import Connection, ForeignKey, Table, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from capstore.errors import StoreError

SQLITE_ROWS_PER_STATEMENT = 500
_SQLITE_MAX_PARAMS = 30_000  # SQLite allows 32,766 bound parameters per statement


class DanglingReference(StoreError):
    """Rows point at parents that do not exist (the transaction is rolled back)."""


Part = tuple[Table, Sequence[str], Sequence[Sequence[Any]]]  # (table, columns, rows in columns order)


def insert_rows(session: Session, table: Table, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> int:
    """Insert ``rows`` (tuples in ``columns`` order) into ``table`` in the session's transaction; returns the count."""
    return insert_tables(session, [(table, columns, rows)])


def insert_tables(session: Session, parts: Sequence[Part]) -> int:
    """``insert_rows`` of each ``(table, columns, rows)`` in turn; returns the rows' count.

    On PostgreSQL the parts' references are checked first and the server's foreign-key triggers
    turned off once around all of them (two round trips, not two a table), so no part may point at
    rows another part inserts.
    """
    parts = [part for part in parts if part[2]]
    if not parts:
        return 0
    conn = session.connection()
    if conn.dialect.name == "sqlite":
        checked = not conn.exec_driver_sql("PRAGMA foreign_keys").scalar()
        for table, columns, rows in parts:
            if checked:
                check_references(session, table, columns, rows)
            _sqlite_multirow(conn, table, columns, rows)
    else:
        with references_checked_setwise(session, parts):
            for table, columns, rows in parts:
                n = len(columns)
                flat = _flat(rows, n, bind_processors(table, columns, conn.dialect))
                _copy(conn, table, columns, list(zip(*[iter(flat)] * n)))
    return sum(len(rows) for _, _, rows in parts)


@contextmanager
def references_checked_setwise(session: Session, parts: Sequence[Part]) -> Iterator[None]:
    """PostgreSQL: the references of the parts' rows checked and locked once per distinct parent, then
    written without the server's per-row foreign-key triggers, where this role may turn them off
    (else a no-op).

    A foreign-key trigger runs one locking lookup per row and key (a third of a candidate's COPY);
    ``lock_references`` takes the same ``FOR KEY SHARE`` locks once per distinct parent, in key order,
    so a concurrent delete of a parent still waits for this transaction or makes it fail. Turning
    triggers off (``session_replication_role = replica``) needs a superuser or, from PostgreSQL 15,
    ``GRANT SET ON PARAMETER session_replication_role``; it lasts only for the statements inside.
    """
    conn = session.connection()
    if conn.dialect.name != "postgresql" or not any(table.foreign_keys for table, _, _ in parts) \
            or not _may_skip_triggers(conn) \
            or any(fk.parent.name not in columns for table, columns, _ in parts
                   for fk in table.foreign_keys):  # a default would go unchecked
        yield
        return
    for table, columns, rows in parts:
        lock_references(session, table, columns, rows)
    before = conn.exec_driver_sql("SELECT current_setting('session_replication_role'), "
                                  "set_config('session_replication_role', 'replica', true)").scalar()
    yield  # an error aborts the transaction, and its rollback undoes the setting
    conn.exec_driver_sql("SELECT set_config('session_replication_role', %s, true)", (before,))


def _may_skip_triggers(conn: Connection) -> bool:
    """Whether this PostgreSQL role may set ``session_replication_role`` (asked once per connection)."""
    known = conn.info.get("capstore_may_skip_triggers")
    if known is None:
        ask = ("SELECT has_parameter_privilege('session_replication_role', 'SET')"
               if (conn.dialect.server_version_info or (0,)) >= (15,)
               else "SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
        known = conn.info["capstore_may_skip_triggers"] = bool(conn.exec_driver_sql(ask).scalar())
    return bool(known)


def held_here(session: Session, table: str) -> set[Any]:
    """The keys of ``table``'s rows that no other transaction can delete before this session's ends
    (PostgreSQL): those it inserted itself outside savepoints (``content.insert_ignore`` records them:
    no other transaction sees them yet), those ``lock_references`` locked, and those that rows it
    locked ``FOR UPDATE`` reference (a step commit's items and run: ``runs.steps``). References to
    them need no lock."""
    root = session.get_transaction()
    held = session.info.get("capstore_held")
    if held is None or held[0] is not root:  # kept per transaction: its end releases everything
        held = session.info["capstore_held"] = (root, {})
    return held[1].setdefault(table, set())  # type: ignore[no-any-return]


def lock_references(session: Session, table: Table, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """PostgreSQL: lock (``FOR KEY SHARE``, in key order) the parent of every single-column foreign key
    value in ``rows``; raise DanglingReference if one has none. What the server's triggers would do per
    row, once per distinct parent, and not for parents this transaction holds already (``held_here``)."""
    conn = session.connection()
    for fk, values in _referenced(table, columns, rows):
        parent, key = fk.column.table.name, fk.column.name
        held = held_here(session, parent)
        values = [v for v in values if v not in held]
        if not values:
            continue
        array = f"CAST(%s AS {fk.column.type.compile(dialect=conn.dialect)}[])"  # the key's type: its index serves
        found = conn.exec_driver_sql(
            f'SELECT p."{key}" FROM "{parent}" AS p WHERE p."{key}" = ANY({array}) ORDER BY p."{key}" FOR KEY SHARE',
            (array_parameter(values),)).scalars().all()
        if len(found) < len(values):
            missing = sorted(set(values) - set(found), key=str)
            raise DanglingReference(f"{table.name}.{fk.parent.name}: {len(missing)} value(s) not in {parent}.{key}, "
                                    f"first {missing[0]!r}")
        if not session.in_nested_transaction():  # a savepoint's rollback would release its locks
            held.update(values)


def check_references(session: Session, table: Table, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Raise DanglingReference if a value of a single-column foreign key in ``rows`` has no parent row.

    SQLite: one query per foreign key, the distinct values passed as one JSON array (``json_each``),
    so checking 20,000 texts costs one statement, not 20,000 index probes from Python.
    """
    for fk, values in _referenced(table, columns, rows):
        parent, key, column = fk.column.table.name, fk.column.name, fk.parent.name
        missing = session.execute(text(
            f'SELECT j.value FROM json_each(:values) AS j WHERE NOT EXISTS '
            f'(SELECT 1 FROM "{parent}" AS p WHERE p."{key}" = j.value)'), {"values": json.dumps(values)}).scalars().all()
        if missing:
            raise DanglingReference(f"{table.name}.{column}: {len(missing)} value(s) not in {parent}.{key}, "
                                    f"first {missing[0]!r}")


def array_parameter(values: Sequence[Any]) -> Any:
    """``values`` as one PostgreSQL array literal, for ``CAST(%s AS type[])``, when every element is a
    str, int, float or None; else the list itself, for the driver to adapt.

    psycopg's array dumper is Python with a regular-expression search per element: 4 of the 6 ms
    that a batch of 800 scores' four arrays took to send (``benchmarks/README.md``). Here: one
    ``join``. Strings are double-quoted with ``\\`` and ``"`` escaped (array input's only escapes),
    so any text, ``""`` and ``"NULL"`` included, reads back as given; floats as their shortest
    exact ``repr`` (``nan`` and ``inf`` included), ints as digits.
    """
    if not set(map(type, values)) <= _LITERAL_TYPES:
        return list(values)
    return "{" + ",".join([_element(v) for v in values]) + "}"


_LITERAL_TYPES = {str, int, float, type(None)}  # exact types: a numpy float's repr is not a number


def _element(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(value)


def _referenced(table: Table, columns: Sequence[str],
                rows: Sequence[Sequence[Any]]) -> Iterator[tuple[ForeignKey, list[Any]]]:
    """Each single-column foreign key of ``columns``, with its distinct non-null values in ``rows``."""
    position = {c: i for i, c in enumerate(columns)}
    for fk in table.foreign_keys:
        if fk.parent.name not in position:
            continue
        values = sorted(set(map(itemgetter(position[fk.parent.name]), rows)) - {None}, key=str)
        if values:
            yield fk, values


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
