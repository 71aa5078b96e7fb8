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
SQLITE_DEFAULT_CACHE_KIB = -2_000  # SQLite's own default (negative: KiB)
SQLITE_BULK_CACHE_KIB = -262_144  # 256 MiB for bulk transactions: the unique index stays in memory


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
        options = conn.get_execution_options()
        if options.get("capstore_bulk"):
            # Only outside a transaction do these take effect. store.bulk.insert_rows checks the
            # references of its rows set-wise instead of per row; checkin puts both back.
            conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
            conn.exec_driver_sql(f"PRAGMA cache_size={SQLITE_BULK_CACHE_KIB}")
            conn.info["capstore_bulk"] = True
        mode = "IMMEDIATE" if options.get("capstore_write") else "DEFERRED"
        conn.exec_driver_sql(f"BEGIN {mode}")

    @event.listens_for(engine, "checkin")
    def _on_checkin(dbapi_conn, record) -> None:  # type: ignore[no-untyped-def]
        if dbapi_conn is not None and record.info.pop("capstore_bulk", False):
            dbapi_conn.execute("PRAGMA foreign_keys=ON")
            dbapi_conn.execute(f"PRAGMA cache_size={SQLITE_DEFAULT_CACHE_KIB}")

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
        self._bulk_writer = sessionmaker(
            bind=self.engine.execution_options(capstore_write=True, capstore_bulk=True), expire_on_commit=False
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
    def write(self, bulk: bool = False) -> Iterator[Session]:
        """One write transaction: committed on success, rolled back on any exception.

        ``bulk``: a transaction for ``store.bulk.insert_rows`` of many rows. On SQLite it runs without
        per-row foreign-key lookups (insert_rows checks its rows' references set-wise) and with a
        larger page cache; write only through insert_rows and updates in it.
        """
        with (self._bulk_writer if bulk else self._writer)() as session, session.begin():
            yield session

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A read-only session (its transaction is rolled back at the end)."""
        with self._reader() as session:
            yield session

    def dispose(self) -> None:
        self.engine.dispose()


def open_store(db: str | None = None, *, upgrade: bool = True, create: bool = True) -> Store:
    """Open the store at ``db`` (path or URL; default ``CAPSTORE_DB`` or ``./capstore.db``).

    With ``upgrade`` (the default for every command) a new or older store is migrated to the
    current schema first; a store written by a newer capstore is refused with a StoreError.
    ``create=False`` is for commands that read what is there: a missing SQLite file is then an
    error (a mistyped ``--db``), not a new empty store.
    """
    from capstore.store.migrate import ensure_current

    url = resolve_url(db)
    if not create:
        parsed = make_url(url)
        if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:") \
                and not Path(parsed.database).exists():
            raise StoreError(f"no store at {parsed.database} (check --db or CAPSTORE_DB)")
    engine = create_store_engine(url)
    store = Store(url=url, engine=engine)
    if upgrade:
        ensure_current(store)
    return store
