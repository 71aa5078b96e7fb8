"""``capstore`` entry point: adds one command group per file and turns user errors into one line."""

from __future__ import annotations

import os
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
        except OSError as exc:  # a path the user gave: a folder, a missing directory, no permission
            click.echo(f"Error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), err=True)
            sys.exit(2)
        except UnicodeDecodeError as exc:
            click.echo(f"Error: a file given is not UTF-8 text ({exc.reason} at byte {exc.start})", err=True)
            sys.exit(2)


@click.group(cls=CapstoreGroup)
@click.version_option(__version__, prog_name="capstore")
@click.option("--db", metavar="PATH|URL", default=None,
              help="Store for every command (same as each command's --db or $CAPSTORE_DB).")
def cli(db: str | None) -> None:
    """capstore: what captioning methods cost and give, in one cached, resumable SQL store."""
    if db:
        # Each command's own --db reads $CAPSTORE_DB when not given, so this reaches all of them.
        os.environ["CAPSTORE_DB"] = db


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
    ("eval", "eval_"),
    ("results", "import_results"),
    ("results", "export_results"),
    ("sql", "sql"),
    ("report", "report"),
    ("report", "export"),
    ("demo", "demo"),
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
