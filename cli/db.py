"""``capstore db``: schema upgrade and version."""

from __future__ import annotations

import click

from capstore.cli.options import db_option


@click.group()
def db() -> None:
    """Manage the store's schema (upgrade, current revision)."""


@db.command()
@db_option
def upgrade(db: str | None) -> None:
    """Create or migrate the store to the newest schema."""
    from capstore.store import open_store
    from capstore.store.migrate import upgrade as do_upgrade

    store = open_store(db, upgrade=False)
    rev = do_upgrade(store)
    click.echo(f"{store.display_url}: schema at revision {rev}")


@db.command()
@db_option
def current(db: str | None) -> None:
    """Print the store's schema revision and whether it is the newest."""
    from capstore.store import open_store
    from capstore.store.migrate import current_revision, head_revision

    store = open_store(db, upgrade=False)
    rev = current_revision(store)
    head = head_revision()
    state = "empty" if rev is None else ("up to date" if rev == head else f"older than {head}")
    click.echo(f"{store.display_url}: revision {rev or '-'} ({state})")
