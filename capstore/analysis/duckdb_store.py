"""The store seen through DuckDB, read-only, with the friendly views ready.

How: an in-memory DuckDB loads ``sqlite_scanner`` or ``postgres_scanner`` from its pip package
(``duckdb_extension_*``; autoinstall/autoload are switched off so nothing is ever downloaded) and
attaches the store as catalog ``capstore_db`` with ``READ_ONLY``. PostgreSQL sessions are also
opened with ``default_transaction_read_only=on``, and the store's schema (its ``search_path``,
e.g. a per-test schema) is the one attached. Schema ``store`` holds one pass-through view per
physical table (``store.candidates``, ``store."references"``…), the same on both databases; the
friendly views (``capstore.analysis.views``) sit in the default schema. Finally file access and the
configuration are locked, so a user's statement can neither read nor write files nor undo this.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import text
from sqlalchemy.engine import make_url

from capstore.analysis.views import VIEWS
from capstore.errors import StoreError
from capstore.store.engine import Store, open_store

if TYPE_CHECKING:
    import duckdb

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


def connect(store: Store, *, lock: bool = True) -> "duckdb.DuckDBPyConnection":
    """An in-memory DuckDB connection with ``store`` attached read-only and the friendly views made.

    ``lock`` (default) then disables file access and locks the configuration: right for running a
    user's SQL; pass ``lock=False`` to keep DuckDB's file functions (``COPY … TO``) in a notebook.
    """
    import duckdb

    con = duckdb.connect(":memory:")
    try:
        con.execute("SET autoinstall_known_extensions = false")
        con.execute("SET autoload_known_extensions = false")
        con.execute("SET TimeZone = 'UTC'")
        schema = _attach(con, store)
        _make_views(con, schema)
        if lock:
            con.execute("SET enable_external_access = false")
            con.execute("SET lock_configuration = true")
    except duckdb.Error as exc:
        con.close()
        raise StoreError(f"cannot open store {store.display_url} in DuckDB: {_first_line(exc)}") from exc
    return con


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


def _attach(con: "duckdb.DuckDBPyConnection", store: Store) -> str:
    """Attach ``store`` read-only as ``CATALOG``; returns the schema holding its tables."""
    dialect = store.dialect
    if dialect not in EXTENSIONS:
        raise StoreError(f"capstore sql supports SQLite and PostgreSQL stores, not {dialect}")
    con.execute(f"LOAD {_literal(str(extension_path(EXTENSIONS[dialect])))}")
    if dialect == "sqlite":
        database = make_url(store.url).database
        con.execute(f"ATTACH {_literal(str(database))} AS {CATALOG} (TYPE sqlite, READ_ONLY)")
        return "main"
    schema = _pg_schema(store)
    con.execute(f"ATTACH {_literal(libpq_dsn(store.url))} AS {CATALOG} "
                f"(TYPE postgres, READ_ONLY, SCHEMA {_literal(schema)})")
    return schema


def libpq_dsn(url: str) -> str:
    """A SQLAlchemy PostgreSQL URL as a libpq connection string, its sessions read-only.

    URL query parameters (``options``, ``sslmode``…) are libpq parameters already and pass through.
    """
    parsed = make_url(url)
    params: dict[str, str] = {}
    for key, value in (("host", parsed.host), ("port", parsed.port), ("user", parsed.username),
                       ("password", parsed.password), ("dbname", parsed.database)):
        if value is not None:
            params[key] = str(value)
    for key, value in parsed.query.items():
        params[key] = value if isinstance(value, str) else value[-1]
    params["options"] = f"{params.get('options', '')} -c default_transaction_read_only=on".strip()
    return " ".join(f"{k}={_libpq_quote(v)}" for k, v in params.items())


def _pg_schema(store: Store) -> str:
    """The schema the store's tables live in: the first of its ``search_path`` that exists."""
    with store.engine.connect() as conn:
        schema = conn.execute(text("SELECT current_schema()")).scalar()
    if not schema:
        raise StoreError(f"store {store.display_url}: its search_path names no existing schema")
    return str(schema)


def _make_views(con: "duckdb.DuckDBPyConnection", schema: str) -> None:
    tables = [row[0] for row in con.execute(
        "SELECT table_name FROM duckdb_tables() WHERE database_name = ? AND schema_name = ? ORDER BY 1",
        [CATALOG, schema]).fetchall()]
    con.execute("CREATE SCHEMA store")
    for table in tables:
        name = _ident(table)
        con.execute(f"CREATE VIEW store.{name} AS SELECT * FROM {CATALOG}.{_ident(schema)}.{name}")
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
