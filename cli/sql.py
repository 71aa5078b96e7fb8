"""``capstore sql``: ad-hoc, read-only SQL over the store through DuckDB."""

from __future__ import annotations

import click

from capstore.analysis.reader_role import READER_ROLE_ENV
from capstore.analysis.sql_limits import DEFAULT_MAX_ROWS, DEFAULT_TIMEOUT_S
from capstore.cli.options import db_option


@click.command("sql")
@click.argument("query", required=False)
@click.option("-f", "--file", "file", metavar="FILE|NAME",
              help="Run a query file, or a shipped query by name (e.g. metrics_by_run).")
@click.option("--param", "params", multiple=True, metavar="NAME=VALUE",
              help="A named parameter ($NAME in the SQL); lists as 1,2,3. Repeatable.")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json", "parquet"]), default="table",
              show_default=True, help="Output format (parquet needs --out).")
@click.option("--out", metavar="FILE", help="Write the rows to FILE instead of printing them.")
@click.option("--timeout", type=float, default=DEFAULT_TIMEOUT_S, show_default=True, metavar="SECONDS",
              help="Stop the query after this long (0: no limit).")
@click.option("--max-rows", type=int, default=DEFAULT_MAX_ROWS, show_default=True, metavar="N",
              help="Rows printed at most (0: all); --out files get every row.")
@click.option("--reader-role", envvar=READER_ROLE_ENV, metavar="ROLE",
              help="PostgreSQL: log in as this read-only role (see capstore db reader-role) "
                   f"[env {READER_ROLE_ENV}].")
@click.option("--analysis", metavar="PATH|off", envvar="CAPSTORE_ANALYSIS",
              help="The analysis mirror (a DuckDB file; default beside a SQLite store, or in the cache folder); "
                   "'off' reads the store directly [env CAPSTORE_ANALYSIS].")
@click.option("--list", "list_", is_flag=True, help="List the shipped queries and the views, then exit.")
@db_option
def sql(query: str | None, file: str | None, params: tuple[str, ...], fmt: str, out: str | None, timeout: float,
        max_rows: int, reader_role: str | None, analysis: str | None, list_: bool, db: str | None) -> None:
    """Run one read-only SELECT over the store's views (runs, candidates, captions, metrics, costs…).

    Example: capstore sql "SELECT run_id, method, usd FROM run_costs"
    or: capstore sql -f metrics_by_run --param runs=1,2 --format csv
    """
    if list_:
        from capstore.analysis.queries import describe_catalog

        click.echo(describe_catalog())
        return
    from capstore.analysis.sql_command import run_sql

    result = run_sql(db, query, file, params, fmt, out, timeout=timeout, max_rows=max_rows, reader_role=reader_role,
                     analysis=analysis)
    click.echo(result.text)
    if result.note:
        click.echo(result.note, err=True)
