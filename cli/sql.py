"""placeholder: owned by one developer; replace."""

from __future__ import annotations

import click


@click.command("sql")
def sql() -> None:
    """Ad-hoc read-only SQL over the store through DuckDB."""
    raise click.ClickException("not built yet")  # placeholder: replaced by the module's owner
