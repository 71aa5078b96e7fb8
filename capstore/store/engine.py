"""Opening a store: where it is, how its connections behave, and its session helpers.

SQLite (the default, ``./capstore.db``) runs in WAL mode with foreign keys on and a busy timeout;
write transactions take the write lock up front (``BEGIN IMMEDIATE``) so that several processes on
one file wait for each other instead of failing with "database is locked" halfway through.
PostgreSQL is reached through psycopg 3 and is the store for many workers on many machines.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from capstore.errors import StoreError

DEFAULT_DB = "capstore.db"
SQLITE_BUSY_TIMEOUT_MS = 60_000


def resolve_url(db: str | None = None) -> str:
    """Turn ``--db`` / ``CAPSTORE_DB`` (a file path or any SQLAlchemy URL) into a URL."""
    db = db or os.environ.get("CAPSTORE_DB") or DEFAULT_DB
    if "://" not in db:
        return f"sqlite:///{Path(db).expanduser().resolve()}"
    if db.startswith(("postgresql://", "postgres://")):
        # psycopg 3 is the driver we ship; plain postgresql:// would look for psycopg2.
        db = "postgresql+psycopg://" + db.split("://", 1)[1]
    return db


def _sqlite_engine(url: str) -> Engine:
    engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
        # Let SQLAlchemy, not the sqlite3 module, decide when transactions begin.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = "IMMEDIATE" if conn.get_execution_options().get("capstore_write") else "DEFERRED"
        conn.exec_driver_sql(f"BEGIN {mode}")

    return engine


def create_store_engine(url: str) -> Engine:
    """An engine for ``url`` with capstore's connection settings; raises StoreError if unreachable."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise StoreError(f"not a database URL or path: {url!r}") from exc
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            parent = Path(parsed.database).parent
            if not parent.is_dir():
                raise StoreError(f"cannot open store {parsed.database}: folder {parent} does not exist")
        engine = _sqlite_engine(url)
    else:
        try:
            engine = create_engine(url, pool_pre_ping=True)
        except Exception as exc:  # unknown dialect, missing driver
            raise StoreError(f"cannot use database URL {parsed.render_as_string(hide_password=True)}: {exc}") from exc
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except OperationalError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise StoreError(
            f"cannot reach store {parsed.render_as_string(hide_password=True)}: {reason}"
        ) from exc
    return engine


@dataclass
class Store:
    """An opened, up-to-date store. Use ``write()`` for transactions that change it, ``read()`` otherwise."""

    url: str
    engine: Engine

    def __post_init__(self) -> None:
        self._writer = sessionmaker(
            bind=self.engine.execution_options(capstore_write=True), expire_on_commit=False
        )
        self._reader = sessionmaker(bind=self.engine, expire_on_commit=False)

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self.engine.dialect.name

    @property
    def display_url(self) -> str:
        return make_url(self.url).render_as_string(hide_password=True)

    @contextmanager
    def write(self) -> Iterator[Session]:
        """One write transaction: committed on success, rolled back on any exception."""
        with self._writer() as session, session.begin():
            yield session

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A read-only session (its transaction is rolled back at the end)."""
        with self._reader() as session:
            yield session

    def dispose(self) -> None:
        self.engine.dispose()


def open_store(db: str | None = None, *, upgrade: bool = True) -> Store:
    """Open the store at ``db`` (path or URL; default ``CAPSTORE_DB`` or ``./capstore.db``).

    With ``upgrade`` (the default for every command) a new or older store is migrated to the
    current schema first; a store written by a newer capstore is refused with a StoreError.
    """
    from capstore.store.migrate import ensure_current

    url = resolve_url(db)
    engine = create_store_engine(url)
    store = Store(url=url, engine=engine)
    if upgrade:
        ensure_current(store)
    return store
