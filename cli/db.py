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

    store = open_store(db, upgrade=False, create=False)
    rev = current_revision(store)
    head = head_revision()
    state = "empty" if rev is None else ("up to date" if rev == head else f"older than {head}")
    click.echo(f"{store.display_url}: revision {rev or '-'} ({state})")


@db.command("reader-role")
@click.option("--name", default="capstore_reader", show_default=True, metavar="ROLE",
              help="The role to create or complete (lower-case letters, digits, _).")
@db_option
def reader_role(name: str, db: str | None) -> None:
    """PostgreSQL: create a LOGIN role that may only SELECT the store's tables (idempotent).

    Then CAPSTORE_READER_ROLE=ROLE (or capstore sql --reader-role ROLE) makes capstore sql, report
    and export read the store as that role.
    """
    from capstore.analysis.reader_role import READER_ROLE_ENV, create_reader_role
    from capstore.store import open_store

    store = open_store(db, upgrade=False, create=False)
    try:
        role = create_reader_role(store, name)
    finally:
        store.dispose()
    click.echo(f"{store.display_url}: role {role.name} {'created' if role.created else 'updated'}: "
               f"USAGE on schema {role.schema}, SELECT on its {role.tables} tables and on tables created later; "
               f"use {READER_ROLE_ENV}={role.name}")
