"""``capstore gc``: remove what failed starts leave behind."""

from __future__ import annotations

import click

from capstore.cli.options import db_option


@click.command()
@click.option("--dry-run", is_flag=True, help="Print what would be removed; remove nothing.")
@click.option("--older-than", type=click.FloatRange(min=0), default=600, show_default=True,
              help="Only runs and pools created at least this many seconds ago (a run starting now is not debris).")
@db_option
def gc(dry_run: bool, older_than: float, db: str | None) -> None:
    """Remove debris runs (interrupted or pending, nothing committed), pools no run uses, and the texts,
    images and embeddings nothing references. Caches of content still in use stay."""
    from capstore.runs.cleanup import collect_garbage
    from capstore.store import open_store

    report = collect_garbage(open_store(db, create=False), dry_run=dry_run, older_than=older_than)
    click.echo(report.describe())
