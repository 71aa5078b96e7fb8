"""``capstore models``: build the tiny offline models, list the models the store knows."""

from __future__ import annotations

from pathlib import Path

import click

from capstore.cli.options import db_option


@click.group()
def models() -> None:
    """Tiny offline models for tests and the demo; the models recorded in the store."""


@models.command("tiny")
@click.argument("out_dir", type=click.Path(path_type=Path))
@click.option("--seed", default=0, show_default=True, help="Seed of the random weights.")
def tiny(out_dir: Path, seed: int) -> None:
    """Build tiny random-weight CLIP, Llama, BLIP-2, LLaVA, X-CLIP and CLAP models into OUT_DIR (no downloads)."""
    from capstore.backends.tiny import build_tiny_models

    built = build_tiny_models(out_dir, seed)
    for role, spec in built.specs.items():
        click.echo(f"{role}\t{spec}")


@models.command("list")
@db_option
def list_(db: str | None) -> None:
    """List the models recorded in the store (kind, backend, fingerprint, name)."""
    from sqlalchemy import select

    from capstore.store import open_store
    from capstore.store.schema import Model

    store = open_store(db, create=False)
    with store.read() as s:
        for m in s.scalars(select(Model).order_by(Model.id)):
            click.echo(f"{m.id}\t{m.kind}\t{m.backend}\t{m.fingerprint[:12]}\t{m.name}")
