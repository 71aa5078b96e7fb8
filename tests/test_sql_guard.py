"""``capstore sql`` refuses, in one line with exit 2, every statement that could write, read files,
reach other databases or servers, or change settings — on SQLite and on PostgreSQL — and nothing
is written anywhere: no marker file appears and the store's checksum is unchanged. Legitimate
queries (CTEs, window functions, lambdas, list and string functions, EXPLAIN) still run.

Statements use placeholders: ``@MARK@`` a file the statement would create, ``@NAME@`` a table,
role or schema it would create, ``@SECRET@`` a file it would read, ``@DB@`` the SQLite store file.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import duckdb
import pytest
from click.testing import CliRunner, Result
from sqlalchemy import text

from capstore.analysis import sql_guard
from capstore.analysis.duckdb_store import connect
from capstore.analysis.sql_guard import TABLE_FUNCTIONS, check_statement
from capstore.cli.main import cli
from capstore.datasets import make_demo
from capstore.errors import InputError
from capstore.prices import set_price
from capstore.store import Store, open_store
from tests.conftest import make_pg_url

PG_EXECUTE = "postgres_execute('capstore_db', "
HOSTILE: list[tuple[str, str]] = [
    # The scanner functions, written so that a text match misses them.
    ("quoted_postgres_query", "SELECT * FROM \"postgres_query\"('capstore_db', 'SELECT 1')"),
    ("comment_before_paren",
     "SELECT * FROM postgres_query /* x */ ('capstore_db', 'SELECT pg_read_file(''@SECRET@'')')"),
    ("upper_case_and_newline", "SELECT * FROM POSTGRES_QUERY\n('capstore_db', 'SELECT 1')"),
    ("pg_read_file_via_query", "SELECT * FROM postgres_query('capstore_db', 'SELECT pg_read_file(''@SECRET@'')')"),
    ("pg_read_binary_file", "FROM postgres_query('capstore_db', 'SELECT * FROM pg_read_binary_file(''@SECRET@'')')"),
    ("copy_to_program", f"SELECT * FROM {PG_EXECUTE}'COPY (SELECT 1) TO PROGRAM ''touch @MARK@''')"),
    ("quoted_postgres_execute", f"SELECT * FROM \"postgres_execute\"('capstore_db', 'CREATE TABLE @NAME@ (a int)')"),
    ("call_postgres_execute", f"CALL {PG_EXECUTE}'COMMIT; BEGIN READ WRITE; CREATE TABLE @NAME@ (a int); COMMIT')"),
    ("postgres_execute_in_subquery", f"SELECT (SELECT count(*) FROM {PG_EXECUTE}'CREATE ROLE @NAME@'))"),
    ("postgres_attach", "SELECT * FROM postgres_attach('host=127.0.0.1 user=postgres dbname=postgres')"),
    ("postgres_scan", "SELECT * FROM postgres_scan('host=127.0.0.1 user=postgres dbname=postgres', 'public', 't')"),
    ("sqlite_scan", "SELECT * FROM sqlite_scan('@DB@', 'runs')"),
    ("sqlite_attach_creates_a_file", "SELECT * FROM sqlite_attach('@MARK@')"),
    ("call_sqlite_attach", "CALL sqlite_attach('@DB@')"),
    ("scalar_position_scanner", "SELECT sqlite_attach('@MARK@')"),
    # Files, the environment, settings.
    ("read_csv", "SELECT * FROM read_csv('@SECRET@')"),
    ("read_text", "SELECT * FROM read_text('@SECRET@')"),
    ("read_blob", "SELECT * FROM read_blob('@SECRET@')"),
    ("glob", "SELECT * FROM glob('/*')"),
    ("getenv", "SELECT getenv('HOME')"),
    ("current_setting", "SELECT current_setting('enable_external_access')"),
    ("replacement_scan_of_a_file", "SELECT * FROM '@SECRET@'"),
    ("replacement_scan_in_schema_store", "SELECT * FROM store.\"@SECRET@\""),
    ("from_first_read_json", "FROM read_json_auto('@SECRET@')"),
    ("sniff_csv", "SELECT * FROM sniff_csv('@SECRET@')"),
    ("parquet_metadata", "SELECT * FROM parquet_metadata('@SECRET@')"),
    ("duckdb_settings", "SELECT * FROM duckdb_settings()"),
    ("duckdb_databases_view", "SELECT path FROM duckdb_databases"),
    ("query_function", "SELECT * FROM query('CREATE TABLE @NAME@ AS SELECT 1')"),
    ("query_table", "SELECT * FROM query_table(['runs', 'duckdb_settings'])"),
    ("execute_serialized_sql", "SELECT * FROM json_execute_serialized_sql(json_serialize_sql('SELECT 1'))"),
    # Unicode look-alikes of allowed or denied names.
    ("fullwidth_read_csv", "SELECT * FROM \uff52\uff45\uff41\uff44_csv('@SECRET@')"),
    ("long_s_read_csv", "SELECT * FROM read_c\u017fv('@SECRET@')"),
    ("cyrillic_e_getenv", "SELECT g\u0435tenv('HOME')"),
    ("fullwidth_quoted_lower", "SELECT \"\uff2c\uff2f\uff37\uff25\uff32\"('a')"),
    # Hidden in nested queries, CTEs, windows, lambdas, other catalogs.
    ("nested_subquery", "SELECT * FROM runs WHERE run_id IN (SELECT 1 FROM (SELECT * FROM read_csv('@SECRET@')) t)"),
    ("cte", "WITH x AS (SELECT * FROM glob('/*')) SELECT * FROM x"),
    ("cte_name_escaping_its_scope", "SELECT * FROM (WITH duckdb_settings AS (SELECT 1) SELECT 1) a, duckdb_settings"),
    ("insert_in_a_cte", "WITH x AS (INSERT INTO store.prices VALUES (1) RETURNING *) SELECT * FROM x"),
    ("window_over_nextval", "SELECT row_number() OVER (ORDER BY nextval('s')) FROM range(3)"),
    ("lambda_calling_getenv", "SELECT list_transform([1], x -> getenv('HOME'))"),
    ("lateral_read_text", "SELECT * FROM runs, LATERAL (SELECT * FROM read_text('@SECRET@'))"),
    ("union_with_glob", "SELECT '1' UNION ALL SELECT file FROM glob('/*')"),
    ("system_qualified_function", "SELECT system.main.getenv('HOME')"),
    ("attached_catalog_table", "SELECT * FROM capstore_db.prices"),
    ("information_schema", "SELECT * FROM information_schema.tables"),
    ("describe_a_file", "DESCRIBE SELECT * FROM read_csv('@SECRET@')"),
    ("show_tables", "SHOW ALL TABLES"),
    # Statements that are not a SELECT.
    ("explain_analyze_delete", "EXPLAIN ANALYZE DELETE FROM store.prices"),
    ("explain_analyze_copy", "EXPLAIN ANALYZE COPY (SELECT 1) TO '@MARK@'"),
    ("explain_analyze_of_a_hostile_select",
     f"EXPLAIN ANALYZE SELECT * FROM {PG_EXECUTE}'CREATE TABLE @NAME@ (a int)')"),
    ("select_into", "SELECT * INTO @NAME@ FROM runs"),
    ("two_statements", "SELECT 1; CREATE TABLE @NAME@ AS SELECT 1"),
    ("semicolon_in_a_comment", "SELECT 1 /* ; */ ; DROP VIEW runs"),
    ("pragma", "PRAGMA database_list"),
    ("pragma_setting", "PRAGMA enable_profiling"),
    ("create_macro", "CREATE MACRO @NAME@(x) AS x"),
    ("create_table_macro", "CREATE TEMP MACRO @NAME@() AS TABLE SELECT * FROM read_csv('@SECRET@')"),
    ("set", "SET enable_external_access = true"),
    ("reset", "RESET lock_configuration"),
    ("set_variable", "SET VARIABLE @NAME@ = 1"),
    ("load", "LOAD httpfs"),
    ("install", "INSTALL httpfs"),
    ("attach", "ATTACH '@MARK@' AS m"),
    ("detach", "DETACH capstore_db"),
    ("use", "USE capstore_db"),
    ("copy_to", "COPY (SELECT * FROM runs) TO '@MARK@'"),
    ("copy_from", "COPY store.prices FROM '@SECRET@'"),
    ("call", "CALL checkpoint()"),
    ("checkpoint", "CHECKPOINT"),
    ("export_database", "EXPORT DATABASE '@MARK@'"),
    ("delete", "DELETE FROM store.prices"),
    ("update", "UPDATE store.runs SET status = 'x'"),
    ("drop_view", "DROP VIEW runs"),
    ("create_table_as", "CREATE TABLE @NAME@ AS SELECT 1"),
    ("pivot_statement", "PIVOT runs ON method USING count(*)"),
]


@dataclass
class HostileStore:
    kind: str
    db: str  # what --db takes
    store: Store
    marks: Path  # where @MARK@ lives: writable by the PostgreSQL server too
    name: str  # @NAME@
    secret: Path
    checksum: Callable[[], str]

    def fill(self, statement: str) -> str:
        db = self.db if self.kind == "sqlite" else str(self.marks / "mark.db")
        return (statement.replace("@MARK@", str(self.marks / "mark")).replace("@NAME@", self.name)
                .replace("@SECRET@", str(self.secret)).replace("@DB@", db))


def sqlite_checksum(path: Path) -> Callable[[], str]:
    """The store file's bytes and the names of every file beside it."""
    def checksum() -> str:
        names = sorted(p.name for p in path.parent.iterdir())
        return hashlib.sha256(path.read_bytes() + "\n".join(names).encode()).hexdigest()
    return checksum


def pg_checksum(store: Store, name: str) -> Callable[[], str]:
    """Every row of every table in the store's schema, its objects, and any role/schema/table ``name``."""
    def checksum() -> str:
        digest = hashlib.sha256()
        with store.engine.connect() as conn:
            schema = conn.execute(text("SELECT current_schema()")).scalar_one()
            for relname, relkind in conn.execute(text(
                    "SELECT c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE n.nspname = :s ORDER BY 1, 2"), {"s": schema}):
                digest.update(f"{relname}:{relkind}\n".encode())
                if relkind == "r":
                    rows = conn.execute(text(
                        "SELECT md5(coalesce(string_agg(t::text, E'\\n' ORDER BY t::text), '')) "
                        f'FROM "{schema}"."{relname}" t')).scalar_one()
                    digest.update(rows.encode())
            stray = conn.execute(text(
                "SELECT (SELECT count(*) FROM pg_roles WHERE rolname = :n) + (SELECT count(*) FROM pg_namespace "
                "WHERE nspname = :n) + (SELECT count(*) FROM pg_class WHERE relname = :n)"), {"n": name}).scalar_one()
            digest.update(f"stray:{stray}".encode())
        return digest.hexdigest()
    return checksum


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def hostile_store(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostileStore]:
    """One demo store per engine for the whole module, and a marker folder the database server can write to."""
    tmp = tmp_path_factory.mktemp(f"hostile-{request.param}")
    marks = Path(tempfile.mkdtemp(prefix="capstore-marks-"))
    os.chmod(marks, 0o777)  # the PostgreSQL server runs as its own user: COPY … TO PROGRAM could write here
    secret = tmp / "secret.csv"
    secret.write_text("secret\n42\n")
    name = f"pwned_{uuid.uuid4().hex[:10]}"
    urls = None
    if request.param == "sqlite":
        db = str(tmp / "store" / "store.db")
        Path(db).parent.mkdir()
    else:
        urls = make_pg_url()
        db = next(urls)
    store = open_store(db)
    make_demo(store)
    checksum = sqlite_checksum(Path(db)) if request.param == "sqlite" else pg_checksum(store, name)
    if request.param == "sqlite":
        store.dispose()  # the file as it rests: no connection of ours holds its WAL open
    try:
        yield HostileStore(request.param, db, store, marks, name, secret, checksum)
    finally:
        store.dispose()
        shutil.rmtree(marks, ignore_errors=True)
        if urls is not None:
            next(urls, None)  # drops the schema


def capstore_sql(*args: str) -> Result:
    return CliRunner().invoke(cli, ["sql", *args])


@pytest.mark.parametrize("statement", [s for _, s in HOSTILE], ids=[i for i, _ in HOSTILE])
def test_hostile_statement_is_refused_and_writes_nothing(hostile_store: HostileStore, statement: str) -> None:
    h = hostile_store
    before = h.checksum()
    try:
        result = capstore_sql(h.fill(statement), "--db", h.db)
        lines = result.output.strip().splitlines()
        assert result.exit_code == 2, result.output
        assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
        assert "Traceback" not in result.output
        assert list(h.marks.iterdir()) == []
        assert h.checksum() == before
    finally:
        for leftover in h.marks.iterdir():  # a failure here must not make later statements fail too
            shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()


def test_the_table_is_large_enough() -> None:
    assert len(HOSTILE) >= 40 and len({i for i, _ in HOSTILE}) == len(HOSTILE)


def test_the_checks_see_a_change(hostile_store: HostileStore) -> None:
    """The checksum and the marker folder would catch a statement that got through."""
    h = hostile_store
    before = h.checksum()
    set_price(h.store, "device_hour", "checksum-probe", 1.0)
    changed = h.checksum()
    with h.store.write() as s:
        s.execute(text("DELETE FROM prices WHERE key = 'checksum-probe'"))
    h.store.dispose()
    assert changed != before  # (SQLite: the pages differ even after the delete; no need to compare again)
    if h.kind == "postgresql":  # without the check the scanner runs a shell command on the server
        con = connect(h.store)
        try:
            con.execute(h.fill(f"CALL {PG_EXECUTE}'COPY (SELECT 1) TO PROGRAM ''touch @MARK@''')"))
        finally:
            con.close()
    else:  # and without the connection's own file lock, COPY writes a file
        con = connect(h.store, lock=False)
        try:
            con.execute(h.fill("COPY (SELECT 1) TO '@MARK@'"))
        finally:
            con.close()
    assert (h.marks / "mark").exists()
    (h.marks / "mark").unlink()


ALLOWED: list[tuple[str, str, list[str]]] = [
    ("cte_and_window",
     "WITH r AS (SELECT item, row_number() OVER (PARTITION BY item ORDER BY ordinal DESC) AS n FROM refs) "
     "SELECT count(*) FROM r WHERE n = 1", ["24"]),
    ("recursive_cte", "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 4) "
                      "SELECT sum(n) FROM r", ["10"]),
    ("cte_named_like_a_view", "WITH runs AS (SELECT 7 AS x) SELECT x FROM runs", ["7"]),
    ("list_functions", "SELECT list_sort(list(DISTINCT ordinal)) FROM refs", ["[0, 1, 2, 3, 4]"]),
    ("lambda", "SELECT list_transform(list_filter([1, 2, 3], x -> x > 1), x -> x * 10)", ["[20, 30]"]),
    ("string_functions", "SELECT upper(split_part(item, '-', 1)) AS p, count(*) FROM items GROUP BY p",
     ["DEMO", "24"]),
    ("quoted_physical_table", 'SELECT count(*) FROM store."references"', ["120"]),
    ("quoted_view_and_upper_case", 'SELECT COUNT(*) FROM "REFS" WHERE "ordinal" = 0', ["24"]),
    ("subquery_over_store_tables",
     "SELECT count(*) FROM store.items WHERE id IN (SELECT item_id FROM store.\"references\" WHERE ordinal = 4)",
     ["24"]),
    ("date_and_json", "SELECT date_part('year', DATE '2024-05-01') || json_extract_string('{\"a\": \"b\"}', '$.a')",
     ["2024b"]),
    ("range_in_from", "SELECT sum(range) FROM range(5)", ["10"]),
    ("unnest", "SELECT count(*) FROM (SELECT unnest([1, 2, 3]))", ["3"]),
    ("comment_and_parameter_free", "/* a comment */ SELECT -- and another\n 1", ["1"]),
    ("qualify_and_aggregate_filter",
     "SELECT count(*) FILTER (WHERE ordinal > 2) FROM refs QUALIFY row_number() OVER () = 1", ["48"]),
]


@pytest.mark.parametrize(("statement", "expected"), [(s, e) for _, s, e in ALLOWED], ids=[i for i, _, _ in ALLOWED])
def test_legitimate_queries_still_run(hostile_store: HostileStore, statement: str, expected: list[str]) -> None:
    result = capstore_sql(statement, "--db", hostile_store.db, "--format", "csv")
    assert result.exit_code == 0, result.output
    assert list(csv.reader(io.StringIO(result.stdout)))[1] == expected


@pytest.mark.parametrize("statement", ["EXPLAIN SELECT count(*) FROM refs",
                                       "/* why */ explain analyze SELECT count(*) FROM store.\"references\""])
def test_explain_of_a_select_runs(hostile_store: HostileStore, statement: str) -> None:
    result = capstore_sql(statement, "--db", hostile_store.db)
    assert result.exit_code == 0, result.output
    # On the analysis mirror's DuckDB tables EXPLAIN ANALYZE of a bare count(*) is answered from
    # the table's row count: its profile has no aggregate operator to show.
    assert "count_star()" in result.output or ("analyze" in statement and "Total Time" in result.output)


def test_describe_and_summarize_of_a_select(hostile_store: HostileStore) -> None:
    result = capstore_sql("DESCRIBE SELECT item, ordinal FROM refs", "--db", hostile_store.db, "--format", "csv")
    assert result.exit_code == 0, result.output
    assert [row[0] for row in csv.reader(io.StringIO(result.stdout))][1:] == ["item", "ordinal"]


def test_a_refused_statement_never_opens_the_store() -> None:
    """The check needs no store: a PostgreSQL URL nobody listens on is never dialled."""
    result = capstore_sql("DELETE FROM store.prices", "--db", "postgresql+psycopg://postgres@127.0.0.1:1/none")
    assert result.exit_code == 2 and "read-only: refusing DELETE" in result.output


def test_every_other_table_function_of_duckdb_is_refused_in_from() -> None:
    con = duckdb.connect()
    names = {r[0] for r in con.execute("SELECT DISTINCT function_name FROM duckdb_functions() "
                                       "WHERE function_type IN ('table', 'table_macro')").fetchall()}
    con.close()
    assert len(names) > 50
    for name in sorted(names - TABLE_FUNCTIONS):
        with pytest.raises(InputError, match=f"refusing table function {name}"):
            check_statement(f"SELECT * FROM {name}()")


def test_the_allow_list_keeps_the_everyday_functions_and_none_that_reach_outside() -> None:
    allowed = sql_guard._allowed_functions()
    assert {"lower", "split_part", "list_transform", "list_sort", "row_number", "lag", "string_agg", "quantile_cont",
            "date_trunc", "json_extract_string", "regexp_replace", "list_contains", "round"} <= allowed
    assert not allowed & {"read_csv", "read_text", "read_blob", "glob", "getenv", "current_setting", "getvariable",
                          "query", "query_table", "nextval", "setseed", "write_log", "json_execute_serialized_sql",
                          "json_serialize_sql", "sqlite_scan", "sqlite_attach", "postgres_query", "postgres_execute",
                          "postgres_attach", "get_block_size", "finalize", "combine"}


def test_everything_capstore_itself_runs_passes_the_check() -> None:
    """The shipped queries and the export queries (the report runs the shipped ones)."""
    from capstore.analysis.export import OTHER_VIEWS, RUN_VIEWS
    from capstore.analysis.queries import list_queries

    texts = [q.text for q in list_queries()] + list(OTHER_VIEWS.values())
    texts += [f"SELECT * FROM {v} WHERE list_contains($runs, run_id) ORDER BY 1, 2" for v in RUN_VIEWS]
    for sql_text in texts:
        assert check_statement(sql_text).sql == sql_text
