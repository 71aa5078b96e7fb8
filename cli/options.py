"""Options shared by commands."""

from __future__ import annotations

from typing import Callable, TypeVar

import click

F = TypeVar("F", bound=Callable[..., object])


def db_option(func: F) -> F:
    """``--db``: a file path or SQLAlchemy URL; default ``CAPSTORE_DB`` or ``./capstore.db``."""
    return click.option(
        "--db",
        envvar="CAPSTORE_DB",
        default=None,
        metavar="PATH|URL",
        help="Store: a SQLite file path or a database URL (default: $CAPSTORE_DB or ./capstore.db).",
    )(func)
