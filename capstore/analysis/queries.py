"""Read-only SQL over the store: the ``sql/`` query files, their named parameters, one statement each.

A query file opens with ``--`` comment lines: the first says what it answers; lines
``-- @param NAME TYPE description`` declare its named parameters (``$NAME`` in the SQL; TYPE is a
DuckDB type such as ``INTEGER``, ``DOUBLE``, ``VARCHAR`` or a list ``INTEGER[]`` given as
``1,2,3``). A declared parameter left out is NULL, so the query writes its own default
(``coalesce($metric, 'CIDEr')``, ``$runs IS NULL OR list_contains($runs, run_id)``). Ad-hoc SQL
declares nothing: every ``$NAME`` it uses must be given, and values are read as integer, number
or text. Only one SELECT (or EXPLAIN of one) over the views runs: ``sql_guard`` decides on the parsed
statement before anything is opened; ``sql_limits`` stops it after a time limit and caps the rows kept.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from capstore.analysis.sql_limits import DEFAULT_MAX_ROWS, DEFAULT_TIMEOUT_S
from capstore.errors import InputError
from capstore.store.engine import Store

if TYPE_CHECKING:
    import pyarrow

    from capstore.analysis.sql_guard import CheckedStatement
    from capstore.analysis.sql_limits import LimitedResult

SCALAR_TYPES = {"INTEGER": int, "BIGINT": int, "DOUBLE": float, "FLOAT": float, "VARCHAR": str, "TEXT": str,
                "BOOLEAN": "bool"}
_PARAM_LINE = re.compile(r"^--\s*@param\s+(\w+)\s+([A-Za-z]+(?:\[\])?)\s*(.*)$")
# Strings, quoted names and comments are skipped so that '$.x' or "-- $y" are not parameters.
_TOKENS = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|--[^\n]*|/\*.*?\*/|\$([A-Za-z_]\w*)", re.S)


@dataclass
class Param:
    name: str
    type: str  # DuckDB type name, "[]" suffix for a list
    doc: str = ""


@dataclass
class Query:
    """A query's text with what its header says: title (first comment line) and declared parameters."""

    text: str
    name: str = ""
    title: str = ""
    params: dict[str, Param] = field(default_factory=dict)

    @property
    def used(self) -> list[str]:
        """The ``$names`` the SQL uses, in order of first use."""
        return list(dict.fromkeys(m for m in _TOKENS.findall(self.text) if m))


def parse_query(text: str, name: str = "") -> Query:
    """Read a query's header comment: its title and ``@param`` lines."""
    query = Query(text=text, name=name)
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("--"):
            if line:
                break
            continue
        match = _PARAM_LINE.match(line)
        if match:
            pname, ptype, doc = match.groups()
            query.params[pname] = Param(pname, ptype.upper(), doc.strip())
        elif not query.title and line.strip("- "):
            query.title = line.strip("- ")
    return query


def list_queries() -> list[Query]:
    """The queries shipped in ``capstore.sql``, by name."""
    folder = resources.files("capstore.sql")
    files = sorted((f for f in folder.iterdir() if f.name.endswith(".sql")), key=lambda f: f.name)
    return [parse_query(f.read_text(encoding="utf-8"), f.name[:-4]) for f in files]


def shipped_query(name: str) -> Query | None:
    """The shipped query called ``name`` (``metrics_by_run`` or ``metrics_by_run.sql``); never a file path."""
    wanted = name.removesuffix(".sql")
    return next((q for q in list_queries() if q.name == wanted), None)


def load_query(name_or_path: str) -> Query:
    """A query file by path, or a shipped query by name (``metrics_by_run`` or ``metrics_by_run.sql``)."""
    path = Path(name_or_path)
    if path.is_file():
        return parse_query(path.read_text(encoding="utf-8"), path.stem)
    shipped = shipped_query(name_or_path) if "/" not in name_or_path else None
    if shipped is not None:
        return shipped
    names = ", ".join(q.name for q in list_queries()) or "none"
    raise InputError(f"no query file {name_or_path} (shipped queries: {names})")


def bind_params(query: Query, given: Mapping[str, Any] | None) -> dict[str, Any]:
    """The values for the ``$names`` the query uses, converted to their declared types."""
    given = dict(given or {})
    used = query.used
    known = set(query.params) | set(used)
    unknown = [k for k in given if k not in known]
    if unknown:
        takes = ", ".join(sorted(known)) or "no parameters"
        raise InputError(f"unknown parameter {unknown[0]!r}; this query takes {takes}")
    bound: dict[str, Any] = {}
    for name in used:
        declared = query.params.get(name)
        if name not in given:
            if declared is None:
                raise InputError(f"parameter ${name} has no value: give --param {name}=VALUE")
            bound[name] = None
        elif declared is not None:
            bound[name] = _convert(name, given[name], declared.type)
        else:
            bound[name] = _infer(given[name])
    return bound


def check_read_only(sql_text: str) -> "CheckedStatement":
    """The statement to run if ``sql_text`` is one read-only SELECT (or EXPLAIN of one) over the views.

    Decided on DuckDB's parse tree (``capstore.analysis.sql_guard``); anything else is a one-line
    InputError, raised before any store is opened.
    """
    from capstore.analysis.sql_guard import check_statement

    return check_statement(sql_text)


def query_arrow(store: Store, sql_text: str, params: Mapping[str, Any] | None = None,
                con: Any = None, *, timeout: float | None = None) -> "pyarrow.Table":
    """Run one read-only statement over the friendly views; every row as an Arrow table."""
    return query_limited(store, sql_text, params, con, timeout=timeout, max_rows=None).table


def query_limited(store: Store, sql_text: str, params: Mapping[str, Any] | None = None, con: Any = None, *,
                  timeout: float | None = DEFAULT_TIMEOUT_S, max_rows: int | None = DEFAULT_MAX_ROWS
                  ) -> "LimitedResult":
    """Run one read-only statement, stopped after ``timeout`` s, keeping at most ``max_rows`` rows.

    The statement is checked and its parameters bound before a connection is opened; ``con``
    (from ``duckdb_store.connect``) is reused when given. 0 or None: no limit.
    """
    from capstore.analysis.duckdb_store import connect
    from capstore.analysis.sql_limits import check_limits, fetch_limited

    checked = check_read_only(sql_text)
    bound = bind_params(parse_query(sql_text), params)
    timeout, max_rows = check_limits(timeout, max_rows)
    own = con is None
    con = con or connect(store)
    try:
        return fetch_limited(con, checked.sql, bound, timeout=timeout, max_rows=max_rows)
    finally:
        if own:
            con.close()


def run_query(store: Store, sql_text: str, params: Mapping[str, Any] | None = None,
              con: Any = None, *, timeout: float | None = None) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run one read-only statement; returns (column names, rows as tuples)."""
    from capstore.analysis.output import table_rows

    table = query_arrow(store, sql_text, params, con, timeout=timeout)
    return table.column_names, table_rows(table)


def describe_catalog() -> str:
    """The friendly views and the shipped queries with their parameters, as text."""
    from capstore.analysis.views import VIEW_DOCS

    lines = ["views:"] + [f"  {name:<11} {doc}" for name, doc in VIEW_DOCS.items()]
    lines.append("  store.<table> every physical table (e.g. store.candidates, store.\"references\")")
    lines.append("queries (capstore sql -f NAME):")
    for q in list_queries():
        lines.append(f"  {q.name:<22} {q.title}")
        lines += [f"  {'':<24}--param {p.name}=<{p.type}> {p.doc}" for p in q.params.values()]
    return "\n".join(lines)


def _convert(name: str, value: Any, type_name: str) -> Any:
    if type_name.endswith("[]"):
        items = value if isinstance(value, (list, tuple)) else [v for v in str(value).split(",") if v.strip()]
        return [_convert(name, v, type_name[:-2]) for v in items]
    kind = SCALAR_TYPES.get(type_name, str)
    if not isinstance(value, str):
        return value
    value = value.strip()
    try:
        if kind == "bool":
            if value.lower() not in ("true", "false", "1", "0"):
                raise ValueError(value)
            return value.lower() in ("true", "1")
        return kind(value)  # type: ignore[operator]
    except ValueError:
        raise InputError(f"parameter {name}={value!r} is not {type_name}") from None


def _infer(value: Any) -> Any:
    """An undeclared parameter's value: a number if it reads back the same, else the text (``007`` stays text)."""
    if not isinstance(value, str):
        return value
    try:
        number = int(value)
        return number if str(number) == value else value
    except ValueError:
        pass
    try:
        return float(value) if value.strip().lower() not in ("nan", "inf", "-inf", "infinity", "-infinity") else value
    except ValueError:
        return value


def require_runs(con: Any, run_ids: Sequence[int]) -> list[int]:
    """``run_ids`` as a list, or an InputError naming the first that is not in the store."""
    if not run_ids:
        raise InputError("give at least one run id")
    ids = [int(r) for r in run_ids]
    found = {row[0] for row in con.execute("SELECT run_id FROM runs WHERE list_contains($ids, run_id)",
                                           {"ids": ids}).fetchall()}
    missing = [r for r in ids if r not in found]
    if missing:
        raise InputError(f"unknown run {missing[0]} (see capstore runs list)")
    return list(dict.fromkeys(ids))
