"""``capstore sql``: one read-only statement (given inline or as a file) to a table, CSV, JSON or Parquet."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from capstore.errors import InputError


def parse_param_pairs(pairs: Sequence[str]) -> dict[str, str]:
    """``["runs=1,2", "metric=CIDEr"]`` → ``{"runs": "1,2", "metric": "CIDEr"}``."""
    params: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise InputError(f"--param {pair!r}: expected NAME=VALUE")
        params[name.strip()] = value
    return params


def run_sql(db: str | None, sql: str | None, file: str | None, params: Sequence[str] = (), fmt: str = "table",
            out: str | None = None) -> str:
    """Run ``sql`` or the query ``file`` (a path or a shipped query's name) on store ``db``.

    Returns the text to print: the rendered rows, or a line saying where they were written.
    """
    from capstore.analysis.duckdb_store import open_for_reading
    from capstore.analysis.output import FORMATS, render, write_parquet
    from capstore.analysis.queries import load_query, query_arrow

    if (sql is None) == (file is None):
        raise InputError("give either a SQL statement or -f FILE, not both and not neither")
    if fmt not in FORMATS:
        raise InputError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if fmt == "parquet" and not out:
        raise InputError("--format parquet writes a file: give --out FILE")
    text = load_query(file).text if file is not None else str(sql)
    bound = parse_param_pairs(params)
    store = open_for_reading(db)
    try:
        table = query_arrow(store, text, bound)
    finally:
        store.dispose()
    if fmt == "parquet":
        return f"wrote {table.num_rows} rows to {write_parquet(table, str(out))}"
    columns = table.column_names
    rendered = render(columns, [tuple(r[c] for c in columns) for r in table.to_pylist()], fmt)
    if out:
        path = Path(out)
        if not path.parent.is_dir():
            raise InputError(f"cannot write {path}: folder {path.parent} does not exist")
        path.write_text(rendered, encoding="utf-8")
        return f"wrote {table.num_rows} rows to {path}"
    return rendered.rstrip("\n")
