"""DuckDB's SQLite scanner, run in a child process: large copies of a SQLite store into the mirror.

Why a child: the scanner links its own copy of SQLite. Two SQLite libraries in one process that
open the same WAL database break each other's POSIX locks (https://sqlite.org/howtocorrupt.html,
2.2): the scanner's copy can take the shared-memory lock as if it were the database's first user
and truncate its ``-shm`` file under the mapping of Python's ``sqlite3`` connections, which then die
with SIGBUS (seen on a 9.7 GB store during ``eval --candidates``). In a child process the locks work
as between any two processes. The child writes each query's rows to a Parquet file (types as the
scanner reads them; doubles bit for bit), which the sync then reads.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from capstore.errors import StoreError

SOURCE = "capstore_db"
_CHILD = r"""
import json, sys
import duckdb
job = json.loads(sys.argv[1])
con = duckdb.connect(":memory:", config={"autoinstall_known_extensions": "false", "autoload_known_extensions": "false"})
con.execute("SET TimeZone = 'UTC'")
con.execute("LOAD " + job["extension"])
con.execute("ATTACH " + job["database"] + " AS capstore_db (TYPE sqlite, READ_ONLY)")
for name, sql in job["queries"].items():
    con.execute("COPY (" + sql + ") TO " + job["files"][name] + " (FORMAT parquet)")
"""


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def scan_to_parquet(database: str, queries: dict[str, str], folder: Path) -> dict[str, Path]:
    """Run each DuckDB query (over the store attached as ``capstore_db``) in a child process; returns
    the Parquet file of each query's rows."""
    from capstore.analysis.duckdb_store import extension_path

    files = {name: folder / f"{k}.parquet" for k, name in enumerate(queries)}
    job = {"extension": _literal(str(extension_path("sqlite_scanner"))), "database": _literal(database),
           "queries": queries, "files": {n: _literal(str(p)) for n, p in files.items()}}
    done = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(job)], capture_output=True, text=True)
    if done.returncode != 0:
        lines = (done.stderr or "").strip().splitlines() or [f"exit status {done.returncode}"]
        raise StoreError(f"reading {database} through DuckDB's SQLite scanner failed: {lines[-1][:300]}")
    return files


def typed_stand_in(w: "object", database: str, tables: list[str]) -> None:
    """Attach an in-memory catalog ``capstore_db`` to ``w`` holding an empty copy of each of the store's
    ``tables``, typed as the scanner reads them (what the mirror's tables are created from)."""
    with tempfile.TemporaryDirectory(prefix="capstore-scan-") as tmp:
        files = scan_to_parquet(database, {t: f"SELECT * FROM {SOURCE}.main.{_ident(t)} LIMIT 0" for t in tables},
                                Path(tmp))
        w.execute(f"ATTACH ':memory:' AS {SOURCE}")  # type: ignore[attr-defined]
        for table, path in files.items():
            w.execute(f"CREATE TABLE {SOURCE}.main.{_ident(table)} AS "  # type: ignore[attr-defined]
                      f"SELECT * FROM read_parquet({_literal(str(path))})")


def store_tables(database: str) -> list[str]:
    """The store's table names (read by the driver: no second SQLite library in this process)."""
    import sqlite3

    con = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        return [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                                          "AND name NOT LIKE 'sqlite_%' ORDER BY name")]
    finally:
        con.close()


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
