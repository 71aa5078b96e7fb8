"""Read-only SQL over the store: the ``sql/`` query files, their named parameters, one statement each.

A query file opens with ``--`` comment lines: the first says what it answers; lines
``-- @param NAME TYPE description`` declare its named parameters (``$NAME`` in the SQL; TYPE is a
DuckDB type such as ``INTEGER``, ``DOUBLE``, ``VARCHAR`` or a list ``INTEGER[]`` given as
``1,2,3``). A declared parameter left out is NULL, so the query writes its own default
(``coalesce($metric, 'CIDEr')``, ``$runs IS NULL OR list_contains($runs, run_id)``). Ad-hoc SQL
declares nothing: every ``$NAME`` it uses must be given, and values are read as integer, number
or text. Only one SELECT (or EXPLAIN) statement runs; anything else is refused before running.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from capstore.errors import InputError
from capstore.store.engine import Store

if TYPE_CHECKING:
    import pyarrow

READ_STATEMENTS = ("SELECT", "EXPLAIN")
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


def load_query(name_or_path: str) -> Query:
    """A query file by path, or a shipped query by name (``metrics_by_run`` or ``metrics_by_run.sql``)."""
    path = Path(name_or_path)
    if path.is_file():
        return parse_query(path.read_text(encoding="utf-8"), path.stem)
    wanted = name_or_path.removesuffix(".sql")
    shipped = {q.name: q for q in list_queries()}
    if wanted in shipped and "/" not in name_or_path:
        return shipped[wanted]
    raise InputError(f"no query file {name_or_path} (shipped queries: {', '.join(shipped) or 'none'})")


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


_SCANNER_FUNCTIONS = re.compile(r"\b((?:sqlite|postgres)_(?:scan|attach|query|execute|scan_pushdown))\s*\(",
                                re.IGNORECASE)


def check_read_only(sql_text: str) -> None:
    """Refuse anything but exactly one SELECT/EXPLAIN statement, with a one-line error."""
    import duckdb

    try:
        statements = duckdb.extract_statements(sql_text)
    except duckdb.Error as exc:
        raise InputError(f"SQL error: {_first_line(exc)}") from exc
    if len(statements) != 1:
        raise InputError(f"give exactly one SQL statement (got {len(statements)})")
    kind = statements[0].type.name
    if kind not in READ_STATEMENTS:
        raise InputError(f"capstore sql is read-only: refusing {kind} (only a SELECT statement runs)")
    # The scanner extensions' own functions reach other files and servers past DuckDB's file switch.
    used = _SCANNER_FUNCTIONS.search(sql_text)
    if used:
        raise InputError(f"capstore sql reads the store only: refusing {used.group(1)}() (query the views instead)")


def query_arrow(store: Store, sql_text: str, params: Mapping[str, Any] | None = None,
                con: Any = None) -> "pyarrow.Table":
    """Run one read-only statement over the friendly views; the result as an Arrow table."""
    import duckdb

    from capstore.analysis.duckdb_store import connect

    check_read_only(sql_text)
    bound = bind_params(parse_query(sql_text), params)
    own = con is None
    con = con or connect(store)
    try:
        return con.execute(sql_text, bound or None).to_arrow_table()
    except duckdb.Error as exc:
        raise InputError(f"SQL error: {_first_line(exc)}") from exc
    finally:
        if own:
            con.close()


def run_query(store: Store, sql_text: str, params: Mapping[str, Any] | None = None,
              con: Any = None) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run one read-only statement; returns (column names, rows as tuples)."""
    table = query_arrow(store, sql_text, params, con)
    columns = table.column_names
    return columns, [tuple(row[c] for c in columns) for row in table.to_pylist()]


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


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


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
