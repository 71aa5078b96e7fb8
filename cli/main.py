"""``capstore`` entry point: adds one command group per file and turns user errors into one line."""

from __future__ import annotations

import os
import sys

import click

from capstore import __version__
from capstore.errors import CapstoreError
from capstore.inputs import display


class OneLineUsageError(click.UsageError):
    """A usage error (bad option value, missing argument, unknown option) shown as one ``Error:`` line."""

    def show(self, file=None) -> None:  # type: ignore[no-untyped-def]
        hint = f" (see '{self.ctx.command_path} --help')" if self.ctx is not None else ""
        click.echo(f"Error: {' '.join(self.format_message().split())}{hint}", file=file, err=True)


def _one_line(exc: click.UsageError) -> click.UsageError:
    if isinstance(exc, (OneLineUsageError, click.exceptions.NoArgsIsHelpError)):
        return exc  # a group called with nothing prints its help, as click does
    return OneLineUsageError(exc.format_message(), exc.ctx)


class CapstoreGroup(click.Group):
    """A group that prints CapstoreError and usage errors as one line and exits 2, with no stack trace."""

    def make_context(self, *args, **kwargs) -> click.Context:  # type: ignore[no-untyped-def]
        try:  # the top-level options (--db, --version, an unknown option) are parsed here
            return super().make_context(*args, **kwargs)
        except click.UsageError as exc:
            raise _one_line(exc) from None

    def invoke(self, ctx: click.Context):  # type: ignore[no-untyped-def]
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:  # each command's own options and arguments
            raise _one_line(exc) from None
        except CapstoreError as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(2)
        except OSError as exc:  # a path the user gave: a folder, a missing directory, no permission
            name = display(exc.filename) if isinstance(exc.filename, (str, bytes)) else ""
            click.echo(f"Error: {exc.strerror or exc}: {name}".rstrip(": "), err=True)
            sys.exit(2)
        except UnicodeDecodeError as exc:
            click.echo(f"Error: a file given is not UTF-8 text ({exc.reason} at byte {exc.start})", err=True)
            sys.exit(2)
        except (KeyboardInterrupt, click.exceptions.Abort):
            # Ctrl-C outside a run's loop (opening the store, creating a run): nothing is half-written,
            # since every write is one transaction; exit as a shell expects after SIGINT.
            click.echo("interrupted", err=True)
            sys.exit(130)


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
    ("slurm", "slurm"),
    ("gc", "gc"),
    ("eval", "eval_"),
    ("results", "import_results"),
    ("results", "export_results"),
    ("sql", "sql"),
    ("report", "report"),
    ("report", "export"),
    ("demo", "demo"),
    ("serve", "serve"),
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
