"""``capstore report`` and ``capstore export``: runs as a Markdown report with plots, or as Parquet."""

from __future__ import annotations

import os

import click

from capstore.cli.options import db_option

ANALYSIS_ENV = "CAPSTORE_ANALYSIS"
analysis_option = click.option(
    "--analysis", metavar="PATH|off", envvar=ANALYSIS_ENV,
    help="The analysis mirror (a DuckDB file; default beside a SQLite store, or in the cache folder); "
         f"'off' reads the store directly [env {ANALYSIS_ENV}].")


@click.command("report")
@click.argument("runs", nargs=-1, required=True, type=int)
@click.option("--out", "out_dir", required=True, metavar="DIR", help="Folder for report.md and its PNG plots.")
@analysis_option
@db_option
def report(runs: tuple[int, ...], out_dir: str, analysis: str | None, db: str | None) -> None:
    """Write a Markdown report (metrics and cost side by side, plots) for RUNS.

    Example: capstore report 1 2 3 --out report/
    """
    from capstore.analysis.duckdb_store import open_for_reading
    from capstore.analysis.report import write_report

    if analysis:  # the report connects through duckdb_store.connect, which reads the variable
        os.environ[ANALYSIS_ENV] = analysis

    click.echo(write_report(open_for_reading(db), list(runs), out_dir))


@click.command("export")
@click.argument("runs", nargs=-1, required=True, type=int)
@click.option("--parquet", "out_dir", required=True, metavar="DIR",
              help="Folder for one Parquet file per view (runs, candidates, captions, metrics, costs…).")
@analysis_option
@db_option
def export(runs: tuple[int, ...], out_dir: str, analysis: str | None, db: str | None) -> None:
    """Export the views' rows for RUNS as Parquet files, for notebooks.

    Example: capstore export 1 2 --parquet out/
    """
    from capstore.analysis.duckdb_store import open_for_reading
    from capstore.analysis.export import export_parquet

    for path in export_parquet(open_for_reading(db), list(runs), out_dir, analysis=analysis):
        click.echo(path)
