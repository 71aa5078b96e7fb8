"""Shared harness for the bad-input tables: run a CLI call, assert one refused line, store unchanged.

A case is refused when the command exits with 2, prints exactly one line starting ``Error: `` (no
traceback), names its culprit, and leaves the store as it was: the same row count in every table and
the same content checksum (SQLite: the bytes of the database file and its WAL; PostgreSQL: an md5 of
every table's rows in the store's schema).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from click.testing import CliRunner, Result
from sqlalchemy import func, select, text

from capstore.cli.main import cli
from capstore.store import open_store
from capstore.store.schema import Base


@dataclass
class Case:
    """One bad input: CLI arguments (``{db}``, ``{tmp}`` and ``{file}`` are filled in), what the line names.

    ``make`` (optional) writes the culprit file under the test's tmp folder and returns its path (``{file}``).
    ``env`` adds environment variables for the call (``None`` removes one).
    """

    id: str
    args: Sequence[str]
    culprits: Sequence[str]
    make: Callable[[Path], Path] | None = None
    env: dict[str, str | None] = field(default_factory=dict)


def invoke(args: Sequence[str], env: dict[str, str | None] | None = None) -> Result:
    """Run the CLI in-process (the environment changes only for this call)."""
    saved = {k: os.environ.get(k) for k in (env or {})}
    try:
        for key, value in (env or {}).items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        return CliRunner().invoke(cli, list(args))
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def assert_refused(result: Result, culprits: Sequence[str] = ()) -> str:
    """Exit code 2, exactly one ``Error:`` line with each culprit in it, no traceback; returns the line."""
    output = result.output
    assert result.exit_code == 2, (result.exit_code, output, result.exception)
    assert "Traceback" not in output, output
    lines = output.strip("\n").splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), output
    for culprit in culprits:
        assert culprit in lines[0], (culprit, lines[0])
    return lines[0]


def fill(args: Sequence[str], db: str, tmp: Path, file: Path | None) -> list[str]:
    return [a.format(db=db, tmp=tmp, file=file or "") for a in args]


def row_counts(db: str) -> dict[str, int]:
    store = open_store(db, upgrade=False)
    try:
        with store.read() as s:
            return {t.name: int(s.scalar(select(func.count()).select_from(t)) or 0)
                    for t in Base.metadata.sorted_tables}
    finally:
        store.dispose()


def checksum(db: str) -> str:
    """A digest of the store's content: file bytes on SQLite, every table's rows on PostgreSQL."""
    if "://" not in db:
        digest = hashlib.sha256()
        for path in (Path(db), Path(db + "-wal")):
            if path.exists():
                digest.update(path.read_bytes())
        return digest.hexdigest()
    store = open_store(db, upgrade=False)
    try:
        digest = hashlib.sha256()
        with store.engine.connect() as conn:
            for table in Base.metadata.sorted_tables:
                cols = ", ".join(f'"{c.name}"' for c in table.columns)
                value = conn.execute(text(
                    f'SELECT md5(coalesce(string_agg(t::text, \'|\' ORDER BY t::text), \'\')) '
                    f'FROM (SELECT {cols} FROM "{table.name}") t')).scalar()
                digest.update(f"{table.name}:{value}".encode())
        return digest.hexdigest()
    finally:
        store.dispose()


def snapshot(db: str) -> tuple[dict[str, int], str]:
    return row_counts(db), checksum(db)


def copy_sqlite(src: str, dst: Path) -> str:
    """A private copy of a seeded SQLite store, WAL included (SQLite's backup API: one consistent file)."""
    import sqlite3

    with sqlite3.connect(src) as source, sqlite3.connect(dst) as target:
        source.backup(target)
    source.close()
    target.close()
    return str(dst)


def check_case(case: Case, db: str, tmp: Path) -> str:
    """Run ``case`` against store ``db``: refused in one line, and the store unchanged."""
    file = case.make(tmp) if case.make else None
    before = snapshot(db)
    line = assert_refused(invoke(fill(case.args, db, tmp, file), case.env),
                          [c.format(db=db, tmp=tmp, file=file or "") for c in case.culprits])
    assert snapshot(db) == before, f"{case.id}: the store changed"
    return line
