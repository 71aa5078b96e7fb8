"""Analysis over the store through DuckDB: friendly views, the ``sql/`` queries, reports, Parquet.

``duckdb_store.connect(store)`` attaches the store read-only (SQLite through ``sqlite_scanner``,
PostgreSQL through ``postgres_scanner``, both loaded from their pip packages, never downloaded) and
creates the friendly views of ``views.py``; ``queries`` runs one read-only statement with named
parameters; ``report`` writes a Markdown report with plots; ``export`` writes Parquet files.
Heavy imports (duckdb, pyarrow, matplotlib) happen inside functions.
"""
