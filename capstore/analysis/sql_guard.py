"""Whether a user's SQL may run: one SELECT over capstore's views, decided on DuckDB's parse tree.

The text is never inspected for names: DuckDB parses it (``json_serialize_sql`` gives the tree as
JSON) on a plain in-memory connection that has no store attached, so a statement is judged before
anything is opened. Quoting (``"postgres_query"``), comments before a parenthesis, upper case or
line breaks all reach the same parsed names. What passes:

- exactly one statement, a SELECT (``DESCRIBE``/``SUMMARIZE`` of a SELECT included), or
  ``EXPLAIN [ANALYZE]`` of one; for EXPLAIN the text run is rebuilt from the checked SELECT;
- every function called anywhere (select list, WHERE, subqueries, CTEs, window functions,
  lambdas) is one of DuckDB's built-in scalar, aggregate, window or macro functions, less
  ``DENIED_FUNCTIONS`` (settings, variables, sequences, logs, SQL-in-a-string); in FROM only
  ``TABLE_FUNCTIONS`` (``range``, ``unnest``…): no file readers, no scanner functions, no ``query()``;
- every table is a capstore view, ``store.<table>`` or a CTE of the statement;
- names are ASCII: a look-alike letter is refused rather than guessed at;
- every node, table reference and expression kind is one this module knows (new syntax is
  refused until it is looked at).

Anything else raises a one-line ``InputError``.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Iterable

from capstore.errors import InputError, first_line

if TYPE_CHECKING:
    import duckdb

# Table functions a SELECT may use in FROM; every other one (read_csv, glob, query, duckdb_*,
# pragma_*, the scanners' sqlite_scan/postgres_query…) is refused.
TABLE_FUNCTIONS = frozenset({"range", "generate_series", "unnest", "json_each", "json_tree"})
# Built-in scalar/aggregate/macro functions that reach beyond the statement's own rows.
DENIED_FUNCTIONS = frozenset({
    "current_setting", "getvariable", "getenv",  # settings, variables, the environment
    "nextval", "currval", "setseed",  # sequences and the random state
    "write_log", "parse_duckdb_log_message",  # the log
    "json_serialize_sql", "json_deserialize_sql", "json_serialize_plan", "json_execute_serialized_sql",
    "query", "query_table",  # SQL given as a string is not checked
    "combine", "finalize",  # aggregate states built by hand
    "get_block_size",  # a macro reading pragma_database_size()
    "sleep_ms", "variant_bytes_to_variant",
})
DENIED_PREFIXES = ("__", "duckdb_", "pragma_", "read_", "sqlite_", "postgres_", "parquet_", "pg_")
# Names DuckDB's parser writes for syntax (``[1, 2]``, ``x[1]``, ``UNNEST``) that the catalog lists
# as table functions or not at all.
SYNTAX_FUNCTIONS = frozenset({"unnest", "unlist"})
EXPRESSION_CLASSES = frozenset({
    "BETWEEN", "CASE", "CAST", "COLLATE", "COLUMN_REF", "COMPARISON", "CONJUNCTION", "CONSTANT", "FUNCTION",
    "LAMBDA", "LAMBDA_REF", "OPERATOR", "PARAMETER", "POSITIONAL_REFERENCE", "STAR", "SUBQUERY", "WINDOW"})
# ``type`` of everything that is not an expression: query nodes, table references, modifiers, orders.
NODE_TYPES = frozenset({
    "SELECT_NODE", "SET_OPERATION_NODE", "RECURSIVE_CTE_NODE", "CTE_NODE",
    "BASE_TABLE", "EMPTY", "EXPRESSION_LIST", "JOIN", "PIVOT", "SHOW_REF", "SUBQUERY", "TABLE_FUNCTION",
    "ORDER_MODIFIER", "DISTINCT_MODIFIER", "LIMIT_MODIFIER", "LIMIT_PERCENT_MODIFIER",
    "ASCENDING", "DESCENDING", "ORDER_DEFAULT"})
SHOW_TYPES = frozenset({"DESCRIBE", "SUMMARY"})  # DESCRIBE / SUMMARIZE of a query
STORE_SCHEMA = "store"
_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_$]*")
_EXPLAIN = re.compile(r"EXPLAIN\s+(?:(ANALY[SZ]E)\s+)?", re.IGNORECASE)
_LEADING_COMMENTS = re.compile(r"(?:\s+|--[^\n]*(?:\n|$)|/\*.*?\*/)*", re.DOTALL)


@dataclass(frozen=True)
class CheckedStatement:
    """A statement that may run: ``sql`` is the text to execute (for EXPLAIN, rebuilt by this module)."""

    sql: str
    kind: str  # "SELECT", "EXPLAIN" or "EXPLAIN ANALYZE"


def check_statement(sql_text: str, views: Iterable[str] | None = None) -> CheckedStatement:
    """``sql_text`` if it is one read-only SELECT (or EXPLAIN of one) over ``views``; else InputError.

    ``views`` defaults to capstore's friendly views; ``store.<table>`` is always allowed.
    """
    import duckdb

    if views is None:
        from capstore.analysis.views import VIEWS

        views = VIEWS
    try:
        statements = _extract(sql_text)
    except duckdb.Error as exc:
        raise InputError(f"SQL error: {first_line(exc)}") from exc
    if len(statements) != 1:
        raise InputError(f"give exactly one SQL statement (got {len(statements)})")
    kind = statements[0].type.name
    if kind == "EXPLAIN":
        return _check_explain(statements[0].query, frozenset(views))
    if kind != "SELECT":
        raise InputError(f"capstore sql is read-only: refusing {kind} (only one SELECT statement runs)")
    try:
        _Checker(frozenset(v.lower() for v in views)).statement(_parse(sql_text))
    except RecursionError:
        raise InputError("capstore sql: the statement is nested too deeply to check") from None
    return CheckedStatement(sql_text, "SELECT")


def _check_explain(text: str, views: frozenset[str]) -> CheckedStatement:
    """``EXPLAIN [ANALYZE] <select>``: the SELECT is checked alone and the text run is rebuilt from it.

    The keywords are found in the text, but safety does not depend on finding them right: what
    follows must parse as one SELECT that passes, and only ``EXPLAIN [ANALYZE] `` + that SELECT runs.
    """
    import duckdb

    start = _LEADING_COMMENTS.match(text).end()  # type: ignore[union-attr]
    match = _EXPLAIN.match(text, start)
    inner = text[match.end():] if match else ""
    try:
        kinds = [s.type.name for s in _extract(inner)]
    except duckdb.Error:
        kinds = []
    if not match or kinds != ["SELECT"]:
        raise InputError("capstore sql is read-only: EXPLAIN runs only as EXPLAIN [ANALYZE] of one SELECT")
    checked = check_statement(inner, views)
    kind = "EXPLAIN ANALYZE" if match and match.group(1) else "EXPLAIN"
    return CheckedStatement(f"{kind} {checked.sql}", kind)


class _Checker:
    """Walks the JSON parse tree of one statement, raising InputError at the first thing not allowed."""

    def __init__(self, views: frozenset[str]) -> None:
        self.views = views

    def statement(self, tree: dict[str, Any]) -> None:
        if tree.get("error"):
            message = (str(tree.get("error_message") or "").strip().splitlines() or ["cannot parse the statement"])[0]
            if tree.get("error_type") == "parser":
                raise InputError(f"SQL error: {message}")
            # e.g. PRAGMA, which DuckDB rewrites into a SELECT of a table function: not a plain SELECT.
            raise InputError(f"capstore sql is read-only: refusing this statement ({message})")
        statements = tree.get("statements") or []
        if len(statements) != 1:
            raise InputError(f"give exactly one SQL statement (got {len(statements)})")
        self.visit(statements[0], frozenset())

    def visit(self, value: Any, ctes: frozenset[str]) -> None:
        if isinstance(value, list):
            for item in value:
                self.visit(item, ctes)
            return
        if not isinstance(value, dict):
            return
        if "cte_map" in value:
            ctes = ctes | self.cte_names(value["cte_map"])
        kind = value.get("type")
        if "class" in value:
            if value["class"] not in EXPRESSION_CLASSES:
                raise _refuse(f"{str(value['class']).lower()} expressions")
            if "function_name" in value:
                self.function(value)
            if value.get("export_state"):
                raise _refuse("EXPORT_STATE")
        elif isinstance(kind, str) and not kind.endswith("_TYPE_INFO"):
            if kind not in NODE_TYPES:
                raise _refuse(f"{kind.lower().replace('_', ' ')}")
            if kind == "BASE_TABLE":
                self.table(value, ctes)
            elif kind == "TABLE_FUNCTION":
                self.table_function(value.get("function") or {}, ctes)
                value = {k: v for k, v in value.items() if k != "function"}
            elif kind == "SHOW_REF" and (value.get("show_type") not in SHOW_TYPES or not value.get("query")
                                         or value.get("table_name")):
                raise _refuse("SHOW (use DESCRIBE or SUMMARIZE of a SELECT)")
        elif "function_name" in value or "table_name" in value:
            raise _refuse("a construct this check does not know")  # a shape seen nowhere above
        for key, child in value.items():
            if key != "cte_map":
                self.visit(child, ctes)
        if "cte_map" in value:
            self.visit(value["cte_map"], ctes)

    def cte_names(self, cte_map: Any) -> frozenset[str]:
        names = set()
        for entry in (cte_map or {}).get("map", []):
            name = _ascii_name(entry.get("key", ""), "CTE name")
            # A CTE may not take the name of a catalog object: a reference outside the CTE's scope
            # would then reach that object (duckdb_settings, pg_tables…) instead.
            if not _IDENTIFIER.fullmatch(name) or (name in _catalog_names() and name not in self.views):
                raise InputError(f"capstore sql: choose another name for CTE {name!r}")
            names.add(name)
        return frozenset(names)

    def function(self, node: dict[str, Any]) -> None:
        name = _ascii_name(node.get("function_name", ""), "function")
        _plain_location(node.get("catalog", ""), node.get("schema", ""), f"{name}()")
        if name not in _allowed_functions():
            raise InputError(f"capstore sql reads the store only: refusing function {name}() "
                             "(DuckDB's built-in scalar, aggregate and window functions run)")

    def table_function(self, node: dict[str, Any], ctes: frozenset[str]) -> None:
        name = _ascii_name(node.get("function_name", ""), "table function")
        _plain_location(node.get("catalog", ""), node.get("schema", ""), f"{name}()")
        if name not in _allowed_table_functions():
            raise InputError(f"capstore sql reads the store only: refusing table function {name}() in FROM "
                             f"(allowed: {', '.join(sorted(_allowed_table_functions()))})")
        for key, child in node.items():
            if key not in ("function_name", "catalog", "schema", "class", "type"):
                self.visit(child, ctes)

    def table(self, node: dict[str, Any], ctes: frozenset[str]) -> None:
        name = _ascii_name(node.get("table_name", ""), "table")
        schema = _ascii_name(node.get("schema_name", ""), "schema")
        catalog = _ascii_name(node.get("catalog_name", ""), "catalog")
        shown = ".".join(p for p in (catalog, schema, name) if p)
        # A store table's name is a plain identifier: DuckDB would read ``store."x.csv"`` as a file.
        if not catalog and (schema == STORE_SCHEMA and _IDENTIFIER.fullmatch(name)
                            or schema in ("", "main") and name in self.views
                            or not schema and name in ctes):
            return
        raise InputError(f"capstore sql reads the store only: refusing table {shown} "
                         "(query capstore's views or store.<table>; see capstore sql --list)")


def _extract(sql_text: str) -> list[Any]:
    """DuckDB's statements in ``sql_text`` (type and text of each), split by its parser."""
    con, lock = _parser()
    with lock:
        return con.extract_statements(sql_text)


def _parse(sql_text: str) -> dict[str, Any]:
    con, lock = _parser()
    with lock:
        raw = con.execute("SELECT json_serialize_sql(?::VARCHAR)", [sql_text]).fetchone()[0]
    return json.loads(raw)


@lru_cache(maxsize=1)
def _parser() -> tuple["duckdb.DuckDBPyConnection", threading.Lock]:
    """A plain in-memory DuckDB (no store, no files, settings locked) for parsing and its catalog."""
    import duckdb

    con = duckdb.connect(":memory:")
    for setting in ("autoinstall_known_extensions = false", "autoload_known_extensions = false",
                    "enable_external_access = false", "lock_configuration = true"):
        con.execute(f"SET {setting}")
    return con, threading.Lock()


def _catalog(sql: str) -> frozenset[str]:
    con, lock = _parser()
    with lock:
        return frozenset(str(row[0]).lower() for row in con.execute(sql).fetchall())


@lru_cache(maxsize=1)
def _allowed_functions() -> frozenset[str]:
    """DuckDB's built-in scalar, aggregate (window included) and macro functions, less the denied."""
    builtin = _catalog("SELECT DISTINCT function_name FROM duckdb_functions() WHERE internal AND schema_name = 'main' "
                       "AND function_type IN ('scalar', 'aggregate', 'macro')")
    return frozenset(n for n in builtin | SYNTAX_FUNCTIONS if _allowed_name(n))


@lru_cache(maxsize=1)
def _allowed_table_functions() -> frozenset[str]:
    builtin = _catalog("SELECT DISTINCT function_name FROM duckdb_functions() WHERE function_type = 'table'")
    return frozenset(n for n in TABLE_FUNCTIONS & builtin if _allowed_name(n))


@lru_cache(maxsize=1)
def _catalog_names() -> frozenset[str]:
    """Tables and views a bare name can reach in DuckDB's own catalog (duckdb_tables, pg_class…)."""
    return _catalog("SELECT view_name FROM duckdb_views() UNION SELECT table_name FROM duckdb_tables()")


def _allowed_name(name: str) -> bool:
    return name not in DENIED_FUNCTIONS and not name.startswith(DENIED_PREFIXES)


def _ascii_name(name: Any, what: str) -> str:
    """A parsed name, lower case; non-ASCII names are refused (DuckDB folds ASCII case only)."""
    text = str(name)
    if not text.isascii():
        raise InputError(f"capstore sql: refusing {what} {text!r}: names must be ASCII")
    return text.lower()


def _plain_location(catalog: Any, schema: Any, shown: str) -> None:
    """Functions are called by their bare name (or ``main.``): no other catalog or schema."""
    if _ascii_name(catalog, "catalog") or _ascii_name(schema, "schema") not in ("", "main"):
        raise InputError(f"capstore sql reads the store only: refusing {'.'.join(p for p in (catalog, schema) if p)}."
                         f"{shown} (call functions by their plain name)")


def _refuse(what: str) -> InputError:
    return InputError(f"capstore sql reads the store only: refusing {what} (one plain SELECT runs)")


