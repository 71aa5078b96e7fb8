"""The SQL page: ``capstore sql``'s read-only path (allow-list, time limit, row cap) behind a text box.

The statement comes from ``?q=`` or a shipped query (``?query=metrics_by_run``), its parameters from
``?p_NAME=VALUE`` (lists as ``1,2,3``, as ``--param``); it runs through
``capstore.analysis.queries.query_limited``, so what the page refuses ``capstore sql`` refuses too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping

from capstore.analysis.sql_limits import DEFAULT_MAX_ROWS, DEFAULT_TIMEOUT_S
from capstore.errors import CapstoreError, first_line
from capstore.serve.connections import AnalysisConnections

if TYPE_CHECKING:
    from capstore.analysis.sql_limits import LimitedResult

PARAM_PREFIX = "p_"


@dataclass
class SqlForm:
    """The statement, the shipped query it came from, and the parameters (given, and those it takes)."""

    sql: str = ""
    query_name: str | None = None
    params: dict[str, str] = field(default_factory=dict)
    takes: dict[str, str] = field(default_factory=dict)  # name -> "TYPE description" ('' for undeclared $names)


@dataclass
class SqlAnswer:
    columns: list[str]
    rows: list[tuple[Any, ...]]
    note: str


def read_form(query: Mapping[str, str]) -> SqlForm:
    """The form from the URL's query: ``q`` wins over ``query`` (a shipped query's name, whose text fills the box)."""
    from capstore.analysis.queries import list_queries, parse_query, shipped_query
    from capstore.serve.pages import NotFound

    name = (query.get("query") or "").strip() or None
    sql = query.get("q") or ""
    if not sql.strip() and name is not None:
        shipped = shipped_query(name)  # a shipped name only: a URL never reads a file of the server
        if shipped is None:
            names = ", ".join(q.name for q in list_queries()) or "none"
            raise NotFound(f"no shipped query {name} (shipped queries: {names})")
        sql = shipped.text
    params = {k[len(PARAM_PREFIX):]: v for k, v in query.items()
              if k.startswith(PARAM_PREFIX) and len(k) > len(PARAM_PREFIX) and v.strip()}
    parsed = parse_query(sql)
    takes = {p.name: f"{p.type} {p.doc}".strip() for p in parsed.params.values()}
    for used in parsed.used:
        takes.setdefault(used, "")
    return SqlForm(sql=sql, query_name=name, params=params, takes=takes)


def run_form(connections: AnalysisConnections, form: SqlForm, all_rows: bool = False) -> "LimitedResult":
    """Run the form's statement as ``capstore sql`` would (checked first; its time limit; its row cap, or
    every row with ``all_rows``, as ``--out`` for the CSV download); InputError when refused or failed."""
    from capstore.analysis.duckdb_store import open_analysis
    from capstore.analysis.queries import bind_params, check_read_only, parse_query, query_limited
    from capstore.analysis.sql_command import reads_unmirrored_tables

    max_rows = None if all_rows else DEFAULT_MAX_ROWS
    check_read_only(form.sql)  # a refused statement or a bad parameter opens no connection
    bind_params(parse_query(form.sql), form.params)
    store = connections.store
    if reads_unmirrored_tables(form.sql):  # the caches and blobs: attach the store too, as `capstore sql` does
        con, _info = open_analysis(store, analysis=connections.analysis, passthrough=True,
                                   sqlite_in_process=connections.reads_directly)
        try:
            return query_limited(store, form.sql, form.params, con, timeout=DEFAULT_TIMEOUT_S, max_rows=max_rows)
        finally:
            con.close()
    with connections.cursor() as cur:
        return query_limited(store, form.sql, form.params, cur, timeout=DEFAULT_TIMEOUT_S, max_rows=max_rows)


def answer(result: "LimitedResult") -> SqlAnswer:
    """Rows for the page's table, with ``capstore sql``'s count line."""
    from capstore.analysis.output import table_rows

    table = result.table
    return SqlAnswer(columns=table.column_names, rows=table_rows(table), note=result.note("download the CSV for all"))


def as_csv(result: "LimitedResult") -> str:
    """Every row as ``capstore sql --format csv`` writes it."""
    from capstore.analysis.output import render, table_rows

    return render(result.table.column_names, table_rows(result.table), "csv")


def error_text(exc: CapstoreError) -> str:
    return first_line(exc)
