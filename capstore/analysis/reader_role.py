"""A PostgreSQL role that can only read the store: what ``capstore sql`` connects as when configured.

Why a separate role and not only a read-only session: ``default_transaction_read_only`` is a
default a session may change (``BEGIN READ WRITE``), and ``SET ROLE`` can be undone
(``SET ROLE NONE``). A role that logs in by itself and holds nothing but ``USAGE`` on the store's
schema and ``SELECT`` on its tables cannot write, whatever SQL reaches the server.
``capstore db reader-role`` creates it (idempotently); ``CAPSTORE_READER_ROLE=NAME`` or
``capstore sql --reader-role NAME`` makes the DuckDB scanner log in as it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from capstore.errors import InputError, StoreError, first_line

if TYPE_CHECKING:  # kept light: the CLI imports this module for READER_ROLE_ENV
    from sqlalchemy.engine import Connection

    from capstore.store.engine import Store

READER_ROLE_ENV = "CAPSTORE_READER_ROLE"
DEFAULT_NAME = "capstore_reader"
# Lower case only: PostgreSQL folds unquoted names, and the libpq ``user`` is compared as written.
_ROLE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
# Built-in roles whose members reach server files or programs, or write every table.
POWER_ROLES = ("pg_execute_server_program", "pg_read_server_files", "pg_write_server_files", "pg_write_all_data")

_PROBLEMS_SQL = """
SELECT r.rolsuper, r.rolcreaterole, r.rolcreatedb, r.rolbypassrls, r.rolreplication, r.rolcanlogin,
       ARRAY(SELECT p.rolname FROM pg_roles p WHERE p.rolname = ANY(:powers) AND pg_has_role(r.oid, p.oid, 'MEMBER')
             ORDER BY 1) AS powers,
       has_schema_privilege(r.oid, :schema, 'CREATE') AS creates_in_schema,
       has_database_privilege(r.oid, current_database(), 'CREATE') AS creates_schemas,
       ARRAY(SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = :schema AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
               AND has_table_privilege(r.oid, c.oid, 'INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER')
             ORDER BY 1) AS writable
FROM pg_roles r WHERE r.rolname = :name"""


@dataclass
class ReaderRole:
    name: str
    schema: str
    tables: int  # tables it may SELECT now (future tables too, by default privileges)
    created: bool  # False: it existed and was granted what it lacked


def validate_role_name(name: str) -> str:
    """``name`` if it is a plain lower-case PostgreSQL role name; else a one-line InputError."""
    if not isinstance(name, str) or not _ROLE_NAME.fullmatch(name):
        raise InputError(f"reader role {name!r}: use lower-case letters, digits and _ (at most 63)")
    return name


def create_reader_role(store: "Store", name: str = DEFAULT_NAME) -> ReaderRole:
    """Create (or complete) a LOGIN role that may only SELECT the store's tables; idempotent.

    Grants USAGE on the store's schema, SELECT on its tables, and SELECT on tables created later
    (default privileges of the user running this, who runs the migrations). Refuses a role that
    can do more than read (superuser, write grants, server-file roles): nothing is changed then.
    """
    from sqlalchemy import text

    from capstore.analysis.duckdb_store import pg_schema

    name = validate_role_name(name)
    if store.dialect != "postgresql":
        raise InputError("a reader role is for PostgreSQL stores; capstore sql opens a SQLite store read-only")
    schema = pg_schema(store)
    role, ns = _ident(name), _ident(schema)
    try:
        with store.engine.begin() as conn:
            created = not conn.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :n"), {"n": name}).first()
            conn.execute(text(f"CREATE ROLE {role} LOGIN" if created else f"ALTER ROLE {role} LOGIN"))
            conn.execute(text(f"GRANT USAGE ON SCHEMA {ns} TO {role}"))
            conn.execute(text(f"GRANT SELECT ON ALL TABLES IN SCHEMA {ns} TO {role}"))
            conn.execute(text(f"ALTER DEFAULT PRIVILEGES IN SCHEMA {ns} GRANT SELECT ON TABLES TO {role}"))
            _refuse_problems(conn, name, schema)  # raising rolls all of the above back
            tables = conn.execute(text(
                "SELECT count(*) FROM pg_tables WHERE schemaname = :s AND has_table_privilege(:n, "
                "format('%I.%I', schemaname, tablename), 'SELECT')"), {"s": schema, "n": name}).scalar_one()
    except StoreError:
        raise
    except Exception as exc:  # no CREATEROLE, not the schema's owner…: the server's reason, one line
        reason = first_line(getattr(exc, "orig", None) or exc)
        raise StoreError(f"cannot create reader role {name} on {store.display_url}: {reason}") from exc
    return ReaderRole(name, schema, int(tables), created)


def check_reader_role(store: "Store", name: str, schema: str) -> None:
    """StoreError unless role ``name`` exists, may log in, and can do nothing but read ``schema``."""
    name = validate_role_name(name)
    with store.engine.connect() as conn:
        _refuse_problems(conn, name, schema)


def reader_role_problems(conn: "Connection", name: str, schema: str) -> list[str]:
    """What role ``name`` may do beyond reading ``schema`` (empty: a reader); ``["missing"]`` if absent."""
    from sqlalchemy import text

    params = {"name": name, "schema": schema, "powers": list(POWER_ROLES)}
    row = conn.execute(text(_PROBLEMS_SQL), params).mappings().first()
    if row is None:
        return ["missing"]
    problems = [flag for flag, on in (("superuser", row["rolsuper"]), ("CREATEROLE", row["rolcreaterole"]),
                                      ("CREATEDB", row["rolcreatedb"]), ("BYPASSRLS", row["rolbypassrls"]),
                                      ("REPLICATION", row["rolreplication"])) if on]
    problems += [f"member of {p}" for p in row["powers"]]
    if not row["rolcanlogin"]:
        problems.append("cannot log in")
    if row["creates_in_schema"]:
        problems.append(f"CREATE on schema {schema}")
    if row["creates_schemas"]:
        problems.append("CREATE on the database")
    if row["writable"]:
        problems.append(f"write grants on {', '.join(row['writable'][:3])}{'…' if len(row['writable']) > 3 else ''}")
    return problems


def _refuse_problems(conn: "Connection", name: str, schema: str) -> None:
    problems = reader_role_problems(conn, name, schema)
    if problems == ["missing"]:
        raise StoreError(f"no PostgreSQL role {name}: create it with `capstore db reader-role --name {name}`")
    if problems:
        raise StoreError(f"role {name} can do more than read the store ({'; '.join(problems)}): "
                         "pick another name or revoke those rights")


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


