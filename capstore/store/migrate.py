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
from sqlalchemy import text
from sqlalchemy.engine import make_url

from capstore.errors import StoreError
from capstore.store.engine import Store

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
    """Migrate ``store`` to ``revision`` (default: newest); returns the revision reached."""
    _refuse_newer(store)
    with _migration_lock(store):
        command.upgrade(alembic_config(store), revision)
    rev = current_revision(store)
    assert rev is not None
    return rev


def ensure_current(store: Store) -> None:
    """Upgrade a new or older store; refuse one written by a newer capstore."""
    rev = current_revision(store)
    if rev == head_revision():
        return
    upgrade(store)


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
