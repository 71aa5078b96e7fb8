"""Opening a store: where it is, how its connections behave, and its session helpers.

SQLite (the default, ``./capstore.db``) runs in WAL mode with foreign keys on and a busy timeout;
write transactions take the write lock up front (``BEGIN IMMEDIATE``) so that several processes on
one file wait for each other instead of failing with "database is locked" halfway through.
PostgreSQL is reached through psycopg 3 and is the store for many workers on many machines.
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar
from urllib.parse import quote

from sqlalchemy import Table, create_engine, event, insert, text
from sqlalchemy.engine import URL, Connection, Engine, ExceptionContext, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, DisconnectionError
from sqlalchemy.orm import Session, sessionmaker

from capstore.errors import StoreError, first_line
from capstore.store.sqlite_files import read_head

T = TypeVar("T")
DEFAULT_DB = "capstore.db"
SQLITE_BUSY_TIMEOUT_MS = 60_000
SQLITE_DEFAULT_CACHE_KIB = -2_000  # SQLite's own default (negative: KiB)
SQLITE_BULK_CACHE_KIB = -262_144  # 256 MiB for bulk transactions: the unique index stays in memory
# Pages in the WAL before SQLite copies them back (its default: 1,000). A run's commits rewrite the
# same index pages again and again (random sha keys); between two checkpoints each is copied once:
# a 1,000-item rehearsal's engine overhead 35.3 -> 32.2-33.2 worker-s at 10,000 pages, and with
# batches of 128 items 30.7 -> 27.9 (medians of 3) at 50,000 (a full-size run: the same within the
# VM's noise). The WAL grows to ~200 MB.
SQLITE_WAL_AUTOCHECKPOINT_PAGES = 50_000
# PostgreSQL settings of every connection (``_postgres_connect_args``); a URL's own options win.
POSTGRES_SETTINGS = {"synchronous_commit": "off"}
PING_AFTER_IDLE_S = 5.0  # PostgreSQL: a pooled connection idle this long is pinged before use


def resolve_url(db: str | None = None) -> str:
    """Turn ``--db`` / ``CAPSTORE_DB`` (a file path or any SQLAlchemy URL) into a URL."""
    db = db or os.environ.get("CAPSTORE_DB") or DEFAULT_DB
    if "\x00" in db:
        raise StoreError(f"--db {db!r} contains a NUL character")
    if "://" not in db:
        return f"sqlite:///{Path(db).expanduser().resolve()}"
    if db.startswith(("postgresql://", "postgres://")):
        # psycopg 3 is the driver we ship; plain postgresql:// would look for psycopg2.
        db = "postgresql+psycopg://" + db.split("://", 1)[1]
    return db


SQLITE_HEADER = b"SQLite format 3\x00"
_EMPTY_OR_CAPSTORE = "SELECT count(*) = 0 OR max(name = 'alembic_version') FROM sqlite_master"


def _sqlite_engine(url: str, mode: str = "rw") -> Engine:
    """An engine on a SQLite file; ``mode`` ``ro`` or ``immutable`` opens it read-only (see ``_sqlite_mode``)."""
    path = make_url(url).database
    if mode != "rw" and path:
        # SQLite's URI form; the file name is percent-encoded so that '?', '#' and '%' stay in the name.
        query = {"mode": "ro", "uri": "true", **({"immutable": "1"} if mode == "immutable" else {})}
        url = URL.create("sqlite", database="file:" + quote(path), query=query)  # type: ignore[assignment]
    engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
        # Let SQLAlchemy, not the sqlite3 module, decide when transactions begin.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        # WAL for a new file or a capstore store only: a database of something else (refused unless
        # `capstore db upgrade` is asked) keeps its journal mode, and a read-only connection cannot switch.
        if mode == "rw" and cur.execute(_EMPTY_OR_CAPSTORE).fetchone()[0]:
            cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute(f"PRAGMA wal_autocheckpoint={SQLITE_WAL_AUTOCHECKPOINT_PAGES}")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        options = conn.get_execution_options()
        if options.get("capstore_write") and mode != "rw":
            # Before anything is written: a read-only store refuses the whole command in one line.
            raise StoreError(f"store {path} is read-only ({_why_read_only(Path(path or ''))}): reading commands "
                             "work on it, this one writes")
        if options.get("capstore_bulk"):
            # Only outside a transaction do these take effect. store.bulk.insert_rows checks the
            # references of its rows set-wise instead of per row; checkin puts both back.
            conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
            conn.exec_driver_sql(f"PRAGMA cache_size={SQLITE_BULK_CACHE_KIB}")
            conn.info["capstore_bulk"] = True
        begin = "IMMEDIATE" if options.get("capstore_write") else "DEFERRED"
        conn.exec_driver_sql(f"BEGIN {begin}")

    @event.listens_for(engine, "checkin")
    def _on_checkin(dbapi_conn, record) -> None:  # type: ignore[no-untyped-def]
        if dbapi_conn is not None and record.info.pop("capstore_bulk", False):
            dbapi_conn.execute("PRAGMA foreign_keys=ON")
            dbapi_conn.execute(f"PRAGMA cache_size={SQLITE_DEFAULT_CACHE_KIB}")

    return engine


def _sqlite_mode(path: Path) -> str:
    """How to open a SQLite file: ``rw``; ``ro`` when it cannot be written; ``immutable`` when not even
    SQLite's ``-shm`` can be made.

    SQLite reads a read-only WAL store only if its ``-shm`` and ``-wal`` files exist or can be created,
    or if it is opened ``immutable`` (https://sqlite.org/wal.html, "Read-Only Databases"). Immutable is
    used only when the folder is not writable and there is no ``-wal``: no writer is at work then (a
    writer keeps its journal in that folder). One that another user starts meanwhile is not seen.
    """
    if not path.exists() or (os.access(path, os.W_OK) and _folder_writable(path)):
        return "rw"
    if _folder_writable(path):
        return "ro"
    wal, shm = (path.with_name(path.name + ext) for ext in ("-wal", "-shm"))
    if wal.exists() and wal.stat().st_size > 0:
        if not shm.exists():
            raise StoreError(f"cannot read store {path}: its {wal.name} holds changes not yet in the file, and "
                             f"SQLite cannot create the {shm.name} it needs to read them ({_why_read_only(path)}); "
                             "open it once where it can be written")
        return "ro"
    return "immutable"


def _folder_writable(path: Path) -> bool:
    return os.access(path.parent, os.W_OK | os.X_OK)


def _why_read_only(path: Path) -> str:
    try:
        if os.statvfs(path.parent).f_flag & os.ST_RDONLY:
            return "on a read-only file system"
    except OSError:
        pass
    return "its folder is not writable" if not _folder_writable(path) else "the file is not writable"


def is_read_only(engine: Engine) -> bool:
    """Whether ``engine`` opened its SQLite store read-only (the file or its folder is not writable)."""
    return engine.dialect.name == "sqlite" and engine.url.query.get("mode") == "ro"


def _check_sqlite_file(path: Path) -> None:
    """Refuse what SQLite cannot open as a store: a folder, a device, a file that is not SQLite."""
    if not path.exists():
        if not path.parent.is_dir():
            raise StoreError(f"cannot open store {path}: folder {path.parent} does not exist")
        if not _folder_writable(path):
            raise StoreError(f"cannot create store {path}: {_why_read_only(path)}")
        return
    if path.is_dir():
        raise StoreError(f"cannot open store {path}: it is a folder, not a SQLite file")
    if not path.is_file():
        raise StoreError(f"cannot open store {path}: not a regular file (a device, pipe or socket)")
    # Not open() and close(): closing would drop the locks of this process's connections to the file.
    head = read_head(path, len(SQLITE_HEADER))
    if head is None:
        raise StoreError(f"cannot open store {path}: "
                         f"{'Permission denied' if not os.access(path, os.R_OK) else 'it cannot be read'}")
    if head and head != SQLITE_HEADER:
        raise StoreError(f"{path} is not a SQLite database (it starts with {head[:8]!r}); "
                         "--db must name a capstore store, a new file or a database URL")


def _one_line_errors(engine: Engine, where: str) -> None:
    """Turn the database errors a user can fix (disk full, read-only, not a database, text the server
    cannot store) into one-line StoreErrors; transient ones (busy, deadlock) are left to retries."""

    @event.listens_for(engine, "handle_error")
    def _handle(context: ExceptionContext) -> None:
        message = store_error_message(context.original_exception)
        if message is not None:
            raise StoreError(f"store {where}: {message}") from context.original_exception


def store_error_message(exc: BaseException) -> str | None:
    """A one-line explanation of a database error the user can fix, or None for any other error."""
    line = first_line(exc)
    name = getattr(exc, "sqlite_errorname", "") or ""
    state = getattr(exc, "sqlstate", None) or ""
    if name in ("SQLITE_FULL", "SQLITE_IOERR_SHMSIZE") or state == "53100" or "No space left on device" in line:
        return (f"the disk is full ({line}); the transaction that hit it stored nothing: free space and "
                "run the command again (a run resumes where it stopped)")
    if name.startswith("SQLITE_READONLY") or state == "25006":
        return f"read-only ({line}): reading commands work, this one writes"
    if name == "SQLITE_NOTADB":
        return "not a SQLite database (file is not a database)"
    if name == "SQLITE_CORRUPT":
        return f"the database file is damaged ({line}); restore it from a copy"
    if name.startswith("SQLITE_IOERR"):
        return f"the disk failed to read or write ({line}, {name})"
    if "NUL (0x00)" in line or state == "22021":
        return "a text contains a NUL character, which PostgreSQL cannot store"
    if isinstance(exc, UnicodeEncodeError):
        return f"a text contains {exc.object[exc.start:exc.end]!r}, a lone surrogate that is not valid text"
    return None


def _ping_when_idle(engine: Engine) -> None:
    """SQLAlchemy's pre-ping (a pooled connection the server closed is replaced before use), asked only
    of a connection idle for ``PING_AFTER_IDLE_S`` or more.

    A worker's loop checks a connection out for every transaction: pinging each time was one more
    round trip per transaction (a one-query read: 0.65 ms, 0.46 ms without). A server that restarts
    while a connection is between two back-to-back transactions still fails that one transaction, as
    it would fail one whose connection was just pinged.
    """
    @event.listens_for(engine, "checkin")
    def _idle_from(_dbapi_conn, record) -> None:  # type: ignore[no-untyped-def]
        record.info["capstore_idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping(dbapi_conn, record, _proxy) -> None:  # type: ignore[no-untyped-def]
        since = record.info.get("capstore_idle_since")
        if since is None or time.monotonic() - since < PING_AFTER_IDLE_S:
            return
        try:
            engine.dialect.do_ping(dbapi_conn)
        except engine.dialect.loaded_dbapi.Error as exc:
            raise DisconnectionError(first_line(exc)) from exc  # the pool connects afresh


def _postgres_connect_args(url: URL) -> dict[str, Any]:
    """PostgreSQL: the server settings every connection starts with, in libpq's ``options`` (no round
    trip), after any the URL gives; a setting the URL gives itself is left as it says.

    ``synchronous_commit=off``: a commit returns before its WAL is flushed to disk, as SQLite's
    ``synchronous=NORMAL`` in WAL mode already does here. A crash of the server's machine may lose
    the last commits (at most ~3 × ``wal_writer_delay``, 0.6 s by default) but never a part of one
    and never one that a later flushed commit follows; a worker's lost steps are redone on resume.
    A 1,000-item rehearsal: engine overhead 52.3 · 45.8 -> 46.6 · 39.6 worker-s (``benchmarks/README.md``).
    """
    if url.get_backend_name() != "postgresql":
        return {}
    given = url.query.get("options", "")
    given = " ".join(given) if isinstance(given, tuple) else given
    ours = [f"-c {name}={value}" for name, value in POSTGRES_SETTINGS.items() if name not in given]
    return {"options": " ".join([given, *ours]).strip()} if ours else {}


def create_store_engine(url: str) -> Engine:
    """An engine for ``url`` with capstore's connection settings; raises StoreError if unreachable.

    A SQLite file that cannot be written (file, folder or file system read-only) is opened
    read-only, so reading commands work on it; writing through ``Store.write`` is then a StoreError.
    """
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise StoreError(f"not a database URL or path: {url!r}") from exc
    where = parsed.render_as_string(hide_password=True)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            path = Path(parsed.database)
            _check_sqlite_file(path)
            where = str(path)
            engine = _sqlite_engine(url, _sqlite_mode(path))
        else:
            engine = _sqlite_engine(url)
    else:
        try:
            engine = create_engine(url, connect_args=_postgres_connect_args(parsed))
        except Exception as exc:  # unknown dialect, missing driver
            raise StoreError(f"cannot use database URL {where}: {exc}") from exc
        _ping_when_idle(engine)
    _one_line_errors(engine, where)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except DBAPIError as exc:
        reason = first_line(exc.orig if exc.orig is not None else exc)
        known = store_error_message(exc.orig) if exc.orig is not None else None
        raise StoreError(f"cannot reach store {where}: {known or reason}") from exc
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
        self._autocommit = self.engine.execution_options(isolation_level="AUTOCOMMIT")

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

    def transact(self, unit: Callable[[Session], T], bulk: bool = False) -> T:
        """``unit(session)`` as one write transaction, run again whole if the database aborted it
        transiently (deadlock, serialization failure, SQLite busy); see ``capstore.store.retry``."""
        from capstore.store.retry import retry_transient

        def once() -> T:
            with self.write(bulk) as session:
                return unit(session)

        return retry_transient(once)

    def insert_one(self, table: Table, row: dict[str, Any]) -> None:
        """Insert one row in a transaction of its own (a usage event per backend call).

        On PostgreSQL the INSERT is sent in autocommit mode: one round trip, where a session's
        transaction took three (BEGIN, INSERT, COMMIT) and the ORM's bookkeeping: 1.8–2.0 ms an event
        alone became 0.55 ms (``benchmarks/README.md``). SQLite writes it in a write transaction."""
        from capstore.store.retry import retry_transient

        if self.dialect != "postgresql":
            self.transact(lambda s: s.execute(insert(table), row))
            return

        def once() -> None:
            with self._autocommit.connect() as conn:
                conn.execute(insert(table), row)

        retry_transient(once)

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
