"""``capstore prices``: the rates that make cost a query."""

from __future__ import annotations

import click

from capstore.cli.options import db_option


@click.group()
def prices() -> None:
    """Show and edit the price table (per device-hour, per 1M API tokens, per image)."""


@prices.command("list")
@db_option
def list_(db: str | None) -> None:
    """List every rate with its source."""
    from capstore.prices import list_prices
    from capstore.store import open_store

    for p in list_prices(open_store(db, create=False)):
        click.echo(f"{p.kind}\t{p.key}\t${p.usd:.6g}\t{p.source or ''}")


@prices.command("set")
@click.argument("kind")
@click.argument("key")
@click.argument("usd", type=float)
@click.option("--source", help="Where the rate comes from.")
@db_option
def set_(kind: str, key: str, usd: float, source: str | None, db: str | None) -> None:
    """Set a rate, e.g. `capstore prices set device_hour "NVIDIA H100 80GB HBM3" 2.49`."""
    from capstore.prices import set_price
    from capstore.store import open_store

    set_price(open_store(db), kind, key, usd, source)
    click.echo(f"{kind} {key}: ${usd}")
