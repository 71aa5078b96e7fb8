"""Schema migrations with alembic, driven from code (no alembic.ini needed).

The migration scripts live in the repository's ``migrations/`` folder and install as
``capstore.migrations``, so any installed capstore can upgrade any older store.
Concurrent first use (two workers opening a new store) is serialised: a file lock beside a SQLite
store, an advisory lock on PostgreSQL.
"""

from __future__ import annotations

from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Iterator

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import make_url

from capstore.errors import StoreError
from capstore.store.engine import Store, is_read_only

PG_MIGRATION_LOCK = 7_201_963_521  # arbitrary, constant advisory-lock key


def alembic_config(store: Store) -> Config:
    """An alembic Config pointing at the shipped migrations and at ``store``."""
    cfg = Config()
    location = str(resources.files("capstore.migrations"))
    cfg.set_main_option("script_location", location.replace("%", "%%"))
    cfg.set_main_option("sqlalchemy.url", store.url.replace("%", "%%"))
    cfg.attributes["store"] = store
    return cfg


def head_revision() -> str:
    """The newest schema revision this code knows."""
    script = ScriptDirectory.from_config(_script_only_config())
    head = script.get_current_head()
    assert head is not None
    return head


def known_revisions() -> set[str]:
    script = ScriptDirectory.from_config(_script_only_config())
    return {rev.revision for rev in script.walk_revisions()}


def _script_only_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(resources.files("capstore.migrations")).replace("%", "%%"))
    return cfg


def current_revision(store: Store) -> str | None:
    """The store's schema revision, or None for an empty store."""
    with store.engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(store: Store, revision: str = "head") -> str:
    """Migrate ``store`` to ``revision`` (default: newest); returns the revision reached.

    This is ``capstore db upgrade``: it also adds capstore's tables to a database that holds others.
    """
    _refuse_newer(store)
    with _migration_lock(store):
        command.upgrade(alembic_config(store), revision)
    rev = current_revision(store)
    assert rev is not None
    return rev


def ensure_current(store: Store) -> None:
    """Upgrade a new or older store; refuse one written by a newer capstore, a read-only one that is
    not current, and a database that holds tables of something else (``capstore db upgrade`` adds
    capstore's tables to it when that is what the user wants)."""
    rev = current_revision(store)
    if rev == head_revision():
        return
    if is_read_only(store.engine):
        _refuse_newer(store)
        state = "empty" if rev is None else f"at schema revision {rev}, older than {head_revision()}"
        raise StoreError(f"store {store.display_url} is read-only and {state}: open it once where it can be "
                         "written (or run `capstore db upgrade` there) to bring it up to date")
    if rev is None:
        # Before the migration lock (whose file would be written beside it). Another process may
        # create the store between the revision read above and this look: all migrations run in one
        # transaction, so the look sees either no table or capstore's tables with alembic_version.
        _refuse_foreign(store)
    upgrade(store)


def _refuse_foreign(store: Store) -> None:
    """StoreError when the database (its current schema on PostgreSQL) holds tables capstore did not make."""
    inspector = inspect(store.engine)
    tables = set(inspector.get_table_names())
    if "alembic_version" in tables:  # made a store since its revision was read: upgrade() checks it
        return
    names = sorted(tables | set(inspector.get_view_names()))
    if names:
        shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        tables = f"{len(names)} table{'s' if len(names) > 1 else ''}"
        raise StoreError(f"{store.display_url} is not a capstore store: it holds {tables} of something else "
                         f"({shown}); capstore adds its tables only to an empty database, or when asked with "
                         "`capstore db upgrade`")


def _refuse_newer(store: Store) -> None:
    rev = current_revision(store)
    if rev is not None and rev not in known_revisions():
        raise StoreError(
            f"store {store.display_url} has schema revision {rev}, written by a newer capstore; "
            "upgrade capstore (pip install -U capstore) to use it"
        )


@contextmanager
def _migration_lock(store: Store) -> Iterator[None]:
    if store.dialect == "sqlite":
        from filelock import FileLock

        database = make_url(store.url).database
        if not database or database == ":memory:":
            yield
            return
        with FileLock(str(Path(database).with_name(Path(database).name + ".migrate.lock")), timeout=300):
            yield
    elif store.dialect == "postgresql":
        with store.engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": PG_MIGRATION_LOCK})
            conn.commit()
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": PG_MIGRATION_LOCK})
                conn.commit()
    else:
        yield
