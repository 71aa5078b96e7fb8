"""``capstore import-results`` and ``export-results``: COCO results files in and out of the store."""

from __future__ import annotations

from pathlib import Path

import click

from capstore.cli.options import db_option


@click.command("import-results")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--dataset", required=True, help="Dataset whose items the image ids name.")
@click.option("--split", default=None, help="Split (default: the dataset's only split).")
@click.option("--label", required=True, help="Name of the imported run in reports.")
@db_option
def import_results(file: Path, dataset: str, split: str | None, label: str, db: str | None) -> None:
    """Import a COCO results file ([{"image_id": ..., "caption": ...}]) as a finished external run.

    Example: capstore import-results blip2_karpathy_test.json --dataset coco-karpathy --label lavis-blip2
    """
    from capstore.results_io import import_results as do_import
    from capstore.store import open_store

    run_id, created = do_import(open_store(db, create=False), file, dataset, label, split)
    if created:
        click.echo(f"run {run_id}: imported {file} as {label!r}")
    else:
        click.echo(f"run {run_id}: {file} was already imported as {label!r}; nothing added")


@click.command("export-results")
@click.argument("run_id", type=int)
@click.argument("file", type=click.Path(path_type=Path))
@db_option
def export_results(run_id: int, file: Path, db: str | None) -> None:
    """Write a run's captions as a COCO results file.

    Example: capstore export-results 3 mils_captions.json
    """
    from capstore.results_io import export_results as do_export
    from capstore.store import open_store

    n = do_export(open_store(db, create=False), run_id, file)
    click.echo(f"run {run_id}: wrote {n} captions to {file}")
