"""``capstore serve``: a read-only, server-rendered web viewer over a store.

Pages (Runs, Run, Item, Compare, SQL) read the friendly DuckDB views through the store's analysis
mirror (``capstore.analysis.duckdb_store``), the SQL page runs ``capstore sql``'s checked path
(``capstore.analysis.queries.query_limited``), and media are read from the store by sha. Nothing
here writes to the store. ``make_app`` builds the Starlette application; ``serve`` runs it.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    # Imported on use: the CLI loads every command module at start, and Starlette is not needed there.
    if name == "make_app":
        from capstore.serve.app import make_app

        return make_app
    if name == "serve":
        from capstore.serve.server import serve

        return serve
    raise AttributeError(name)


__all__ = ["make_app", "serve"]
