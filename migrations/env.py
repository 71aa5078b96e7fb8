"""Alembic environment: runs migrations on the store handed over by capstore.store.migrate."""

from alembic import context
from sqlalchemy import create_engine

from capstore.store.schema import Base

config = context.config
target_metadata = Base.metadata


def run_migrations_online() -> None:
    store = config.attributes.get("store")
    engine = store.engine if store is not None else create_engine(config.get_main_option("sqlalchemy.url"))
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=True,  # SQLite can only ALTER through table copies
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata,
                      literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    run_migrations_online()
