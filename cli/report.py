"""placeholder: owned by one developer; replace."""

from __future__ import annotations

import click


@click.command("report")
def report() -> None:
    """Write a Markdown report with tables and plots for runs."""
    raise click.ClickException("not built yet")  # placeholder: replaced by the module's owner


@click.command("export")
def export() -> None:
    """Export runs' tables as Parquet for notebooks."""
    raise click.ClickException("not built yet")  # placeholder: replaced by the module's owner
