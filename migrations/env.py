"""Alembic environment: runs migrations on the store handed over by capstore.store.migrate."""

from alembic import context
from sqlalchemy import Connection, create_engine

from capstore.store.schema import Base

config = context.config
target_metadata = Base.metadata


def _check_foreign_keys(connection: Connection) -> None:
    """SQLite, before committing: every foreign key still points at a row (the copies kept them)."""
    bad = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
    if bad:
        raise RuntimeError(f"migration left {len(bad)} dangling foreign keys, first: {tuple(bad[0])}")


def run_migrations_online() -> None:
    store = config.attributes.get("store")
    engine = store.engine if store is not None else create_engine(config.get_main_option("sqlalchemy.url"))
    with engine.connect() as connection:
        sqlite = connection.dialect.name == "sqlite"
        raw = connection.connection.driver_connection
        if sqlite:
            # A batch copy drops the old table; with enforcement on, that drop would first delete its
            # rows and cascade to the tables referencing it. The pragma only works outside a
            # transaction, hence on the raw connection before alembic begins one.
            raw.execute("PRAGMA foreign_keys=OFF")
        try:
            context.configure(
                connection=connection,
                target_metadata=target_metadata,
                render_as_batch=True,  # SQLite can only ALTER through table copies
                compare_type=True,
            )
            with context.begin_transaction():
                context.run_migrations()
                if sqlite:
                    _check_foreign_keys(connection)
        finally:
            if sqlite:
                if connection.in_transaction():  # alembic committed its own; anything after is a read
                    connection.rollback()
                raw.execute("PRAGMA foreign_keys=ON")


if context.is_offline_mode():
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata,
                      literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    run_migrations_online()
