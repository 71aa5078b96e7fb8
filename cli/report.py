"""``capstore report`` and ``capstore export``: runs as a Markdown report with plots, or as Parquet."""

from __future__ import annotations

import click

from capstore.cli.options import db_option


@click.command("report")
@click.argument("runs", nargs=-1, required=True, type=int)
@click.option("--out", "out_dir", required=True, metavar="DIR", help="Folder for report.md and its PNG plots.")
@db_option
def report(runs: tuple[int, ...], out_dir: str, db: str | None) -> None:
    """Write a Markdown report (metrics and cost side by side, plots) for RUNS.

    Example: capstore report 1 2 3 --out report/
    """
    from capstore.analysis.duckdb_store import open_for_reading
    from capstore.analysis.report import write_report

    click.echo(write_report(open_for_reading(db), list(runs), out_dir))


@click.command("export")
@click.argument("runs", nargs=-1, required=True, type=int)
@click.option("--parquet", "out_dir", required=True, metavar="DIR",
              help="Folder for one Parquet file per view (runs, candidates, captions, metrics, costs…).")
@db_option
def export(runs: tuple[int, ...], out_dir: str, db: str | None) -> None:
    """Export the views' rows for RUNS as Parquet files, for notebooks.

    Example: capstore export 1 2 --parquet out/
    """
    from capstore.analysis.duckdb_store import open_for_reading
    from capstore.analysis.export import export_parquet

    for path in export_parquet(open_for_reading(db), list(runs), out_dir):
        click.echo(path)
