"""``capstore export --parquet``: the friendly views' rows for some runs, one Parquet file per view.

For notebooks: ``pandas.read_parquet("out/candidates.parquet")``. Run-level views are limited to
the runs; ``items`` and ``refs`` to the items those runs worked on or captioned; ``models`` to the
models their usage names; ``prices`` is whole.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from capstore.store.engine import Store

RUN_VIEWS = ("runs", "work", "candidates", "captions", "iterations", "metrics", "errors", "usage", "costs",
             "run_costs")
RUN_ITEMS = ("SELECT item_id FROM work WHERE list_contains($runs, run_id) "
             "UNION SELECT item_id FROM captions WHERE list_contains($runs, run_id)")
OTHER_VIEWS = {
    "items": f"SELECT * FROM items WHERE item_id IN ({RUN_ITEMS}) ORDER BY item_id",
    "refs": f"SELECT * FROM refs WHERE item_id IN ({RUN_ITEMS}) ORDER BY item_id, ordinal",
    "models": "SELECT * FROM models WHERE model_id IN (SELECT model_id FROM usage "
              "WHERE list_contains($runs, run_id)) ORDER BY model_id",
    "prices": "SELECT * FROM prices ORDER BY kind, key",
}


def export_parquet(store: Store, run_ids: Sequence[int], out_dir: str | Path, *,
                   analysis: str | None = None) -> list[Path]:
    """Write ``<view>.parquet`` for each view, limited to ``run_ids``; returns the files written.

    ``analysis``: the analysis mirror to read (default: the store's own; ``off``: the store directly)."""
    from tqdm import tqdm

    from capstore.analysis.duckdb_store import connect
    from capstore.analysis.output import make_dir, write_parquet
    from capstore.analysis.queries import query_arrow, require_runs

    out = Path(out_dir)
    con = connect(store, analysis=analysis, passthrough=False)
    try:
        runs = require_runs(con, run_ids)
        make_dir(out)
        queries = {v: f"SELECT * FROM {v} WHERE list_contains($runs, run_id) ORDER BY 1, 2" for v in RUN_VIEWS}
        queries.update(OTHER_VIEWS)
        written = []
        for view, sql in tqdm(queries.items(), desc="export", unit="view", disable=None):  # None: off unless a TTY
            params = {"runs": runs} if "$runs" in sql else None
            written.append(write_parquet(query_arrow(store, sql, params, con=con), out / f"{view}.parquet"))
    finally:
        con.close()
    return written
