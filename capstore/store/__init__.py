"""The SQL store: schema, engine, migrations and content-addressed writes."""

from capstore.store.engine import Store, open_store, resolve_url

__all__ = ["Store", "open_store", "resolve_url"]
