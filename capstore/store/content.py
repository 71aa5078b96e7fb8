"""Content-addressed writes: texts and images by sha256, bulk inserts that ignore duplicates.

Write order: callers insert texts (and images) first, then the rows that point at them, in the
same transaction, so a crash never leaves a dangling reference.
"""

from __future__ import annotations

import hashlib
from typing import Any, Iterable, Mapping, Sequence

from sqlalchemy import Table, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from capstore.store.bulk import array_parameter, bind_processors, held_here, references_checked_setwise
from capstore.store.schema import Base, Text

# SQLite allows 32,766 bound parameters per statement; PostgreSQL 65,535.
_MAX_PARAMS = 30_000
_UNNEST_ROWS = 50_000  # rows per unnest statement on PostgreSQL (its arrays are single parameters)


def sha256_text(text: str) -> str:
    """The key of a text: sha256 of its UTF-8 bytes, hex."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def sha256_bytes(data: bytes) -> str:
    """The key of an image: sha256 of its file bytes, hex."""
    return hashlib.sha256(data).hexdigest()


def _table(model_or_table: type[Base] | Table) -> Table:
    return model_or_table if isinstance(model_or_table, Table) else model_or_table.__table__  # type: ignore[return-value]


def insert_ignore(session: Session, model: type[Base] | Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """Bulk ``INSERT … ON CONFLICT DO NOTHING`` of ``rows`` (all with the same keys).

    Rows keyed by their own primary key go in key order: an insert that meets another
    transaction's uncommitted row of the same key waits for it, so two transactions inserting
    overlapping keys in different orders deadlock on PostgreSQL; in one global order they cannot.
    """
    if not rows:
        return
    table = _table(model)
    key = [c.name for c in table.primary_key.columns]
    if key and all(k in rows[0] for k in key):
        rows = sorted(rows, key=lambda row: tuple(row[k] for k in key))
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql" and _unnest_insert(session, table, rows):
        return
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = insert(table).on_conflict_do_nothing()
    chunk = max(1, _MAX_PARAMS // max(1, len(rows[0])))
    for start in range(0, len(rows), chunk):
        session.execute(stmt, list(rows[start : start + chunk]))


def _unnest_insert(session: Session, table: Table, rows: Sequence[Mapping[str, Any]]) -> bool:
    """PostgreSQL: the rows as one ``INSERT … SELECT FROM unnest(arrays) ON CONFLICT DO NOTHING`` per
    chunk, when no column's type converts values on the way in and no client-side default is left to
    fill (else False: not done).

    Twice as fast as the driver's multi-row VALUES for a batch of texts or scores (the engine's
    commits); ``unnest`` keeps the arrays' order, so the rows still go in key order.
    """
    conn = session.connection()
    columns = list(rows[0])
    if any(c.default is not None and c.name not in rows[0] for c in table.columns):
        return False  # SQLAlchemy's insert fills client-side defaults; unnest would not
    if bind_processors(table, columns, conn.dialect):
        return False  # values the column types convert on the way in (JSON, bytes): the driver's way
    types = [table.c[name].type.compile(dialect=conn.dialect) for name in columns]
    quoted = ", ".join(f'"{c}"' for c in columns)
    casts = ", ".join(f"CAST(%s AS {t}[])" for t in types)
    sql = f'INSERT INTO "{table.name}" ({quoted}) SELECT * FROM unnest({casts}) ON CONFLICT DO NOTHING'
    key = [c.name for c in table.primary_key.columns]
    if len(key) == 1 and not session.in_nested_transaction():
        sql += f' RETURNING "{key[0]}"'  # the keys this transaction inserted: see bulk.held_here
    for start in range(0, len(rows), _UNNEST_ROWS):  # driver SQL: errors still come as SQLAlchemy's
        arrays = [[row[c] for row in rows[start : start + _UNNEST_ROWS]] for c in columns]
        with references_checked_setwise(session, [(table, columns, list(zip(*arrays)) if table.foreign_keys else [])]):
            result = conn.exec_driver_sql(sql, tuple(map(array_parameter, arrays)))
        if result.returns_rows:
            held_here(session, table.name).update(result.scalars().all())
    return True


def put_texts(session: Session, texts: Iterable[str]) -> list[str]:
    """Store ``texts`` (once each) and return their shas in the given order."""
    texts = list(texts)
    shas = [sha256_text(t) for t in texts]
    unique = {sha: t for sha, t in zip(shas, texts)}
    insert_ignore(session, Text, [{"sha256": s, "text": t} for s, t in unique.items()])
    return shas


def get_texts(session: Session, shas: Iterable[str]) -> dict[str, str]:
    """Look up texts by sha (missing shas are absent from the result)."""
    wanted = list(dict.fromkeys(shas))
    out: dict[str, str] = {}
    for start in range(0, len(wanted), _MAX_PARAMS):
        part = wanted[start : start + _MAX_PARAMS]
        out.update(session.execute(select(Text.sha256, Text.text).where(Text.sha256.in_(part))).all())
    return out
