"""``capstore sql``: ad-hoc, read-only SQL over the store through DuckDB."""

from __future__ import annotations

import click

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
@click.option("--list", "list_", is_flag=True, help="List the shipped queries and the views, then exit.")
@db_option
def sql(query: str | None, file: str | None, params: tuple[str, ...], fmt: str, out: str | None, list_: bool,
        db: str | None) -> None:
    """Run one read-only SELECT over the store's views (runs, candidates, captions, metrics, costs…).

    Example: capstore sql "SELECT run_id, method, usd FROM run_costs"
    or: capstore sql -f metrics_by_run --param runs=1,2 --format csv
    """
    if list_:
        from capstore.analysis.queries import describe_catalog

        click.echo(describe_catalog())
        return
    from capstore.analysis.sql_command import run_sql

    click.echo(run_sql(db, query, file, params, fmt, out))
