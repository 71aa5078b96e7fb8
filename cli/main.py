"""``capstore`` entry point: adds one command group per file and turns user errors into one line."""

from __future__ import annotations

import sys

import click

from capstore import __version__
from capstore.errors import CapstoreError


class CapstoreGroup(click.Group):
    """A group that prints CapstoreError as one line and exits 2, with no stack trace."""

    def invoke(self, ctx: click.Context):  # type: ignore[no-untyped-def]
        try:
            return super().invoke(ctx)
        except CapstoreError as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(2)


@click.group(cls=CapstoreGroup)
@click.version_option(__version__, prog_name="capstore")
def cli() -> None:
    """capstore: what captioning methods cost and give, in one cached, resumable SQL store."""


# (module under capstore.cli, attribute): one line per command file; each file owns its commands.
COMMANDS: list[tuple[str, str]] = [
    ("db", "db"),
    ("dataset", "dataset"),
    ("models", "models"),
    ("prices", "prices"),
    ("run", "run"),
    ("run", "resume"),
    ("run", "worker"),
    ("run", "status"),
    ("run", "runs"),
]


def _add_commands() -> None:
    import importlib

    for module, attr in COMMANDS:
        cli.add_command(getattr(importlib.import_module(f"capstore.cli.{module}"), attr))


_add_commands()


def main() -> None:
    cli(prog_name="capstore")


if __name__ == "__main__":
    main()
