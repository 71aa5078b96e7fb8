"""``capstore sql``: one read-only statement (given inline or as a file) to a table, CSV, JSON or Parquet."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from capstore.analysis.sql_limits import DEFAULT_MAX_ROWS, DEFAULT_TIMEOUT_S, check_limits
from capstore.errors import InputError

if TYPE_CHECKING:
    from capstore.analysis.sql_limits import LimitedResult


def parse_param_pairs(pairs: Sequence[str]) -> dict[str, str]:
    """``["runs=1,2", "metric=CIDEr"]`` → ``{"runs": "1,2", "metric": "CIDEr"}``."""
    params: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise InputError(f"--param {pair!r}: expected NAME=VALUE")
        params[name.strip()] = value
    return params


@dataclass
class SqlOutput:
    """What ``capstore sql`` prints: ``text`` (rows or where they went) and, for CSV/JSON cut at
    ``--max-rows``, a ``note`` for stderr, so stdout stays a valid CSV or JSON document."""

    text: str
    note: str | None = None


def run_sql(db: str | None, sql: str | None, file: str | None, params: Sequence[str] = (), fmt: str = "table",
            out: str | None = None, *, timeout: float | None = DEFAULT_TIMEOUT_S,
            max_rows: int | None = DEFAULT_MAX_ROWS, reader_role: str | None = None,
            analysis: str | None = None) -> SqlOutput:
    """Run ``sql`` or the query ``file`` (a path or a shipped query's name) on store ``db``.

    The statement is checked (one read-only SELECT) before the store is opened; it runs on the
    store's analysis mirror (``analysis``: its file, or ``off`` to read the store directly) and stops
    after ``timeout`` seconds. Printed rows stop at ``max_rows`` (a last line says how many there
    were); ``out`` files get every row. 0 or None: no limit.
    """
    from capstore.analysis.duckdb_store import open_analysis, open_for_reading
    from capstore.analysis.output import FORMATS
    from capstore.analysis.queries import bind_params, check_read_only, load_query, parse_query, query_limited

    if (sql is None) == (file is None):
        raise InputError("give either a SQL statement or -f FILE, not both and not neither")
    if fmt not in FORMATS:
        raise InputError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if fmt == "parquet" and not out:
        raise InputError("--format parquet writes a file: give --out FILE")
    if out and not Path(out).parent.is_dir():
        raise InputError(f"cannot write {out}: folder {Path(out).parent} does not exist")
    timeout, max_rows = check_limits(timeout, max_rows)
    text = load_query(file).text if file is not None else str(sql)
    bound = parse_param_pairs(params)
    check_read_only(text)  # a refused statement or a bad parameter never opens the store
    bind_params(parse_query(text), bound)
    store = open_for_reading(db)
    try:
        con, info = open_analysis(store, reader_role=reader_role, analysis=analysis,
                                  passthrough=reads_unmirrored_tables(text))
        try:
            result = query_limited(store, text, bound, con, timeout=timeout, max_rows=None if out else max_rows)
        finally:
            con.close()
    finally:
        store.dispose()
    output = _render(result, fmt, out)
    if info.note:  # the mirror could not be used: said on stderr, so stdout keeps only the rows
        output.note = "\n".join(n for n in (output.note, f"note: {info.note}") if n)
    return output


def reads_unmirrored_tables(sql_text: str) -> bool:
    """Whether ``sql_text`` names a ``store.<table>`` that the analysis mirror does not hold (the caches,
    image blobs): then the store is attached too. Decided on the text: a miss only makes the query fail."""
    from capstore.analysis.mirror_sync import RULED

    names = re.findall(r'store\s*\.\s*"?([A-Za-z_][A-Za-z0-9_]*)', sql_text)
    return any(name.lower() not in RULED for name in names)


def _render(result: "LimitedResult", fmt: str, out: str | None) -> SqlOutput:
    from capstore.analysis.output import render, table_rows, write_parquet

    table = result.table
    if fmt == "parquet":
        return SqlOutput(f"wrote {table.num_rows} rows to {write_parquet(table, str(out))}")
    rendered = render(table.column_names, table_rows(table), fmt)
    if out:
        path = Path(out)
        path.write_text(rendered, encoding="utf-8")
        return SqlOutput(f"wrote {table.num_rows} rows to {path}")
    rendered = rendered.rstrip("\n")
    if not result.truncated:
        return SqlOutput(rendered)
    if fmt == "table":  # the last line, "(N rows)", says what was left out instead
        return SqlOutput(rendered.rsplit("\n", 1)[0] + "\n" + result.note())
    return SqlOutput(rendered, result.note())
