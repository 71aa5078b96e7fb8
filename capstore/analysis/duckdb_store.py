"""The store seen through DuckDB, read-only, with the friendly views ready.

How: an in-memory DuckDB attaches the store's analysis mirror (``capstore.analysis.mirror``: a
columnar DuckDB copy of the store's tables, synced incrementally first) read-only as catalog
``analysis``; schema ``store`` holds one view per physical table (``store.candidates``,
``store."references"``…) over it, the same on both databases, and the friendly views
(``capstore.analysis.views``) sit in the default schema. The store itself is attached too, read-only
through ``sqlite_scanner`` or ``postgres_scanner`` (loaded from their pip packages
``duckdb_extension_*``; autoinstall/autoload are off so nothing is ever downloaded), for the tables
the mirror leaves out (embedding, score and generation caches, image blobs), and for everything with
``analysis="off"`` or when the mirror cannot be synced now. PostgreSQL sessions are opened with
``default_transaction_read_only=on`` on the store's schema (its ``search_path``, e.g. a per-test
schema); with a reader role configured (``CAPSTORE_READER_ROLE``, see ``reader_role``) the scanner
logs in as that role, which can only SELECT the store's tables. Finally file access, Python
replacement scans and the configuration are locked, so a user's statement can neither read nor
write files, nor reach Python objects, nor undo this. (What a statement may call at all is decided
before, on its parse tree: ``sql_guard``.)
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import text
from sqlalchemy.engine import make_url

from capstore.analysis.views import VIEWS
from capstore.errors import StoreError
from capstore.store.engine import Store, open_store

if TYPE_CHECKING:
    import duckdb

    from capstore.analysis.mirror import MirrorInfo

CATALOG = "capstore_db"
EXTENSIONS = {"sqlite": "sqlite_scanner", "postgresql": "postgres_scanner"}


def open_for_reading(db: str | None) -> Store:
    """Open an existing store (a missing SQLite file is an error, not a new empty store)."""
    from capstore.store.migrate import current_revision, head_revision

    # Reading must not write: no migration here (every other command upgrades an older store).
    store = open_store(db, upgrade=False, create=False)
    revision = current_revision(store)
    if revision != head_revision():
        store.dispose()
        what = "is not a capstore store" if revision is None else f"has schema {revision}, this capstore reads {head_revision()}"
        raise StoreError(f"{store.display_url} {what}; run `capstore db upgrade` first")
    return store


def connect(store: Store, *, lock: bool = True, reader_role: str | None = None, analysis: str | None = None,
            passthrough: bool = True) -> "duckdb.DuckDBPyConnection":
    """An in-memory DuckDB connection over ``store``'s analysis mirror (synced first), views made.

    ``lock`` (default) then disables file access and Python replacement scans and locks the
    configuration: right for running a user's SQL; pass ``lock=False`` to keep DuckDB's file
    functions (``COPY … TO``) and pandas frames in a notebook. ``reader_role`` (default
    ``$CAPSTORE_READER_ROLE``; PostgreSQL only): the role the scanner logs in as, checked first to
    be able to do nothing but read. ``analysis``: the mirror file (default beside a SQLite store or in
    the user's cache folder, ``$CAPSTORE_ANALYSIS``), or ``"off"`` to read the store directly.
    ``passthrough=False`` skips attaching the store for the tables the mirror leaves out.
    """
    return open_analysis(store, lock=lock, reader_role=reader_role, analysis=analysis, passthrough=passthrough)[0]


def open_analysis(store: Store, *, lock: bool = True, reader_role: str | None = None, analysis: str | None = None,
                  passthrough: bool = True, sqlite_in_process: bool = True
                  ) -> tuple["duckdb.DuckDBPyConnection", "MirrorInfo"]:
    """``connect``, and where the rows come from (``MirrorInfo``: the mirror's path and sync, or a note
    saying the store is read directly).

    ``sqlite_in_process=False``: DuckDB's SQLite scanner never opens a SQLite store in this process —
    no passthrough, and MirrorBusy instead of reading the store directly. For long-lived processes
    whose threads keep Python ``sqlite3`` connections to the store (``capstore serve``): the scanner
    links its own SQLite, and two SQLite libraries in one process drop each other's POSIX locks when
    they close the file, after which another process may reset the WAL's shared memory under the
    first library's mapping (SIGBUS; see ``sqlite_scan``)."""
    import duckdb

    from capstore.analysis.mirror import MirrorBusy, MirrorInfo, attach_for_reading, mirror_path

    role = _reader_role(store, reader_role)
    con = duckdb.connect(":memory:")
    try:
        con.execute("SET autoinstall_known_extensions = false")
        con.execute("SET autoload_known_extensions = false")
        con.execute("SET TimeZone = 'UTC'")
        path = mirror_path(store, analysis)
        info = MirrorInfo(None)
        if path is not None:
            try:
                info = attach_for_reading(con, store, path)
            except MirrorBusy as exc:
                if store.dialect == "sqlite" and not sqlite_in_process:
                    raise
                info = MirrorInfo(None, note=f"{exc}; reading the store directly (slower)")
        if store.dialect == "sqlite" and not sqlite_in_process:
            if info.path is None:
                raise MirrorBusy(f"the analysis mirror of {store.display_url} is off; this reader needs it")
            passthrough = False
        schema = _attach(con, store, role) if info.path is None or passthrough else None
        _make_views(con, schema, (info.columns or {}) if info.path is not None else None)
        if lock:
            con.execute("SET enable_external_access = false")
            con.execute("SET python_enable_replacements = false")
            con.execute("SET lock_configuration = true")
    except duckdb.Error as exc:
        con.close()
        raise StoreError(f"cannot open store {store.display_url} in DuckDB: {_first_line(exc)}") from exc
    except BaseException:
        con.close()
        raise
    return con, info


def extension_path(name: str) -> Path:
    """The ``.duckdb_extension`` file shipped by pip package ``duckdb_extension_<name>``."""
    import duckdb

    package = f"duckdb_extension_{name}"
    try:
        module = importlib.import_module(package)
    except ImportError as exc:
        raise StoreError(f"DuckDB extension {name} is missing: pip install {package.replace('_', '-')}=="
                         f"{duckdb.__version__}") from exc
    path = Path(module.__file__).parent / "extensions" / f"v{duckdb.__version__}" / f"{name}.duckdb_extension"
    if not path.exists():
        raise StoreError(f"{package} has no extension for duckdb {duckdb.__version__} (expected {path})")
    return path


def _reader_role(store: Store, given: str | None) -> str | None:
    """The reader role to log in as (PostgreSQL), verified; None on SQLite or when none is set."""
    from capstore.analysis.reader_role import READER_ROLE_ENV, check_reader_role, validate_role_name

    name = given if given is not None else os.environ.get(READER_ROLE_ENV, "")
    if not name or store.dialect != "postgresql":
        return None
    check_reader_role(store, validate_role_name(name), pg_schema(store))
    return name


def _attach(con: "duckdb.DuckDBPyConnection", store: Store, role: str | None = None) -> str:
    """Attach ``store`` read-only as ``CATALOG``; returns the schema holding its tables."""
    dialect = store.dialect
    if dialect not in EXTENSIONS:
        raise StoreError(f"capstore sql supports SQLite and PostgreSQL stores, not {dialect}")
    con.execute(f"LOAD {_literal(str(extension_path(EXTENSIONS[dialect])))}")
    if dialect == "sqlite":
        database = make_url(store.url).database
        # This process's own sqlite3 connections let go first: the scanner's SQLite library would drop
        # their POSIX locks when it closes the file (see open_analysis, ``sqlite_in_process``).
        store.engine.dispose()
        con.execute(f"ATTACH {_literal(str(database))} AS {CATALOG} (TYPE sqlite, READ_ONLY)")
        return "main"
    schema = pg_schema(store)
    con.execute(f"ATTACH {_literal(libpq_dsn(store.url, role))} AS {CATALOG} "
                f"(TYPE postgres, READ_ONLY, SCHEMA {_literal(schema)})")
    return schema


def libpq_dsn(url: str, role: str | None = None) -> str:
    """A SQLAlchemy PostgreSQL URL as a libpq connection string, its sessions read-only.

    URL query parameters (``options``, ``sslmode``…) are libpq parameters already and pass through.
    ``role``: log in as that role instead of the URL's user, without the user's password (libpq
    finds the role's own in ``~/.pgpass`` or ``PGPASSWORD``, or the server trusts it).
    """
    parsed = make_url(url)
    params: dict[str, str] = {}
    user, password = (role, None) if role else (parsed.username, parsed.password)
    for key, value in (("host", parsed.host), ("port", parsed.port), ("user", user),
                       ("password", password), ("dbname", parsed.database)):
        if value is not None:
            params[key] = str(value)
    for key, value in parsed.query.items():
        params[key] = value if isinstance(value, str) else value[-1]
    params["options"] = f"{params.get('options', '')} -c default_transaction_read_only=on".strip()
    return " ".join(f"{k}={_libpq_quote(v)}" for k, v in params.items())


def pg_schema(store: Store) -> str:
    """The schema the store's tables live in: the first of its ``search_path`` that exists."""
    with store.engine.connect() as conn:
        schema = conn.execute(text("SELECT current_schema()")).scalar()
    if not schema:
        raise StoreError(f"store {store.display_url}: its search_path names no existing schema")
    return str(schema)


def _make_views(con: "duckdb.DuckDBPyConnection", schema: str | None,
                mirrored: dict[str, list[str]] | None) -> None:
    """``store.<table>`` for every physical table (from the mirror where it holds the table, else from
    the attached store), the token view's source, then the friendly views."""
    from capstore.analysis.mirror import MIRROR_CATALOG, direct_derived_views, mirror_columns, mirror_views

    con.execute("CREATE SCHEMA store")
    con.execute("CREATE SCHEMA derived")
    covered: set[str] = set()
    if mirrored is not None:
        columns = mirrored or mirror_columns(con)
        mirror_views(con, columns)
        covered = set(columns)
    if schema is not None:
        tables = [row[0] for row in con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE database_name = ? AND schema_name = ? ORDER BY 1",
            [CATALOG, schema]).fetchall()]
        for table in tables:
            if table not in covered:
                name = _ident(table)
                con.execute(f"CREATE VIEW store.{name} AS SELECT * FROM {CATALOG}.{_ident(schema)}.{name}")
    if mirrored is None:
        direct_derived_views(con)
    if mirrored is not None:
        con.execute(f"CREATE VIEW derived.text_tokens AS SELECT text_sha, tokenizer, ptb, token_ids "
                    f"FROM {MIRROR_CATALOG}.main.text_tokens")
    else:
        con.execute("CREATE VIEW derived.text_tokens AS SELECT CAST(NULL AS VARCHAR) AS text_sha, "
                    "CAST(NULL AS VARCHAR) AS tokenizer, CAST(NULL AS VARCHAR) AS ptb, "
                    "CAST(NULL AS INTEGER[]) AS token_ids WHERE false")
    for view, sql in VIEWS.items():
        con.execute(f"CREATE VIEW main.{view} AS {sql}")


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _libpq_quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
