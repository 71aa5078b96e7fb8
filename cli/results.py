"""placeholder: owned by one developer; replace."""

from __future__ import annotations

import click


@click.command("import-results")
def import_results() -> None:
    """Import a COCO results file as a finished external run."""
    raise click.ClickException("not built yet")  # placeholder: replaced by the module's owner


@click.command("export-results")
def export_results() -> None:
    """Write a run's captions as a COCO results file."""
    raise click.ClickException("not built yet")  # placeholder: replaced by the module's owner
