"""The analysis mirror on a full-size store: build, syncs, and every shipped query and view filter.

Usage::

    .venv/bin/python benchmarks/big_store.py --db /tmp/big/store.db          # once: the 2.5M-candidate store
    .venv/bin/python benchmarks/analysis_queries.py --db /tmp/big/store.db --json out.json
    .venv/bin/python benchmarks/analysis_queries.py --db /tmp/big/store.db --direct   # also without the mirror

Measured, in this order:

1. **build**: the mirror deleted, then built by a first query (``open_analysis``);
2. **no-op**: opening the analysis connection when nothing changed (the mirror's change marker is
   compared with the store's; no sync), and ``sync_mirror`` itself when nothing changed;
3. **queries**: every shipped ``sql/`` query (one run named where it takes ``runs``) and, for every
   view, its typical filter — one run (counted, and every row fetched into Arrow), and one item of
   one run — on the warm mirror: the median of ``--repeat`` runs on one connection;
4. **new iteration**: one more MILS iteration for every item of the run (50 candidates each, 18 of
   them new texts and 32 texts from its previous iteration, as MILS's candidates repeat; iteration
   states, work-item updates and usage) written in one bulk transaction through
   ``capstore.store.bulk.insert_rows``, then the sync that brings it into the mirror; ``--new-iterations N``
   does that N times (each a new iteration, each synced).

``--direct`` times the queries of 3 also with ``analysis="off"`` (DuckDB's scanners on the store).
Numbers and the machine: ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sqlalchemy import func, select, update  # noqa: E402

from capstore.analysis.duckdb_store import open_analysis, open_for_reading  # noqa: E402
from capstore.analysis.mirror import mirror_path, sync_mirror  # noqa: E402
from capstore.analysis.queries import bind_params, list_queries, parse_query  # noqa: E402
from capstore.runs.steps import CANDIDATE_COLUMNS, STATE_COLUMNS  # noqa: E402
from capstore.store.bulk import insert_rows  # noqa: E402
from capstore.store.content import sha256_text  # noqa: E402
from capstore.store.schema import Candidate, IterationState, Run, Text, UsageEvent, WorkItem, utcnow  # noqa: E402

# Queries that need tokens or a metric computation of their own are timed by eval_speed.py.
SKIPPED = {"caption_metrics", "candidate_metrics"}


def view_filters(run: int, item_id: int, item: str) -> dict[str, tuple[str, dict[str, Any]]]:
    """Each view's typical filter: one run, and one item of that run (where the view has items)."""
    out: dict[str, tuple[str, dict[str, Any]]] = {}
    for view in ("runs", "work", "candidates", "captions", "iterations", "metrics", "candidate_values", "errors",
                 "usage", "costs", "run_costs"):
        out[f"{view}: one run, count"] = (f"SELECT count(*) FROM {view} WHERE run_id = $run", {"run": run})
        out[f"{view}: one run, every row fetched"] = (f"SELECT * FROM {view} WHERE run_id = $run", {"run": run})
    for view in ("work", "candidates", "captions", "iterations", "metrics", "candidate_values", "errors"):
        out[f"{view}: one item"] = (f"SELECT * FROM {view} WHERE run_id = $run AND item = $item",
                                    {"run": run, "item": item})
    out["candidates: one item, last iteration"] = (
        "SELECT * FROM candidates WHERE run_id = $run AND item = $item AND iteration = "
        "(SELECT max(iteration) FROM candidates WHERE run_id = $run AND item = $item)", {"run": run, "item": item})
    out["items: one item"] = ("SELECT * FROM items WHERE item_id = $item_id", {"item_id": item_id})
    out["refs: one item"] = ("SELECT * FROM refs WHERE item_id = $item_id", {"item_id": item_id})
    out["store.candidates: count"] = ("SELECT count(*) FROM store.candidates", {})
    return out


def timed(con: Any, sql: str, params: dict[str, Any], repeat: int) -> dict[str, Any]:
    times, rows = [], 0
    for _ in range(repeat):
        start = time.perf_counter()
        rows = con.execute(sql, params or None).to_arrow_table().num_rows
        times.append(time.perf_counter() - start)
    return {"median_s": statistics.median(times), "min_s": min(times), "rows": rows}


def all_queries(store: Any, run: int) -> dict[str, tuple[str, dict[str, Any]]]:
    with store.read() as s:
        item_id, item = s.execute(select(WorkItem.item_id, Candidate.item_id).where(WorkItem.run_id == run)
                                  .join(Candidate, Candidate.item_id == WorkItem.item_id).limit(1)).one()
        from capstore.store.schema import Item

        item = s.scalar(select(Item.external_id).where(Item.id == item_id))
    queries = {}
    for q in list_queries():
        if q.name in SKIPPED:
            continue
        given = {"runs": str(run)} if "runs" in q.params else {}
        queries[f"sql/{q.name}.sql"] = (q.text, bind_params(parse_query(q.text), given))
    queries.update(view_filters(run, item_id, item))
    return queries


def run_queries(store: Any, queries: dict[str, tuple[str, dict[str, Any]]], repeat: int, analysis: str | None) -> dict:
    con, info = open_analysis(store, analysis=analysis, passthrough=False)
    try:
        return {name: timed(con, sql, params, repeat) for name, (sql, params) in queries.items()}
    finally:
        con.close()


def add_iteration(store: Any, run: int, per: int = 50, new: int = 18) -> dict[str, Any]:
    """One more iteration of the MILS run: ``per`` candidates for every item, ``new`` of them new texts and
    the others texts the item proposed at its last iteration (MILS's candidates repeat: 0.9M distinct
    texts among 2.5M candidates), written in one bulk transaction."""
    rng = random.Random(time.time_ns())
    with store.read() as s:
        it = s.scalar(select(func.max(Candidate.iteration)).where(Candidate.run_id == run)) or 0
        earlier: dict[int, list[str]] = {}
        for item, sha in s.execute(select(Candidate.item_id, Candidate.text_sha)
                                   .where(Candidate.run_id == run, Candidate.iteration == it)):
            earlier.setdefault(item, []).append(sha)
    it += 1
    now = utcnow()
    texts, cands, states = {}, [], []
    for item, old in sorted(earlier.items()):
        shas = rng.sample(old, min(per - new, len(old)))
        for k in range(per - len(shas)):
            text = f"a new caption {k} of item {item} at iteration {it}, draw {rng.random():.6f}"
            texts[sha256_text(text)] = text
            shas.append(sha256_text(text))
        scored = sorted(((sha, rng.random()) for sha in shas), key=lambda p: -p[1])
        cands.extend((run, item, it, sha, "generated", sc, rank) for rank, (sha, sc) in enumerate(scored, 1))
        states.append((run, item, it, scored[0][0], scored[0][1], 0.5, per, [[scored[0][0], scored[0][1]]], now))
    start = time.perf_counter()
    with store.write(bulk=True) as s:
        insert_rows(s, Text.__table__, ("sha256", "text"), sorted(texts.items()))
        insert_rows(s, Candidate.__table__, CANDIDATE_COLUMNS, cands)
        insert_rows(s, IterationState.__table__, STATE_COLUMNS, states)
        s.execute(update(WorkItem).where(WorkItem.run_id == run).values(iterations_done=it, updated_at=now))
        s.add(UsageEvent(run_id=run, stage="generate", device_type="cuda", device_name="NVIDIA H100 80GB HBM3",
                         device_seconds=5000.0, items=len(earlier)))
    return {"iteration": it, "candidates": len(cands), "new_texts": len(texts), "write_s": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", required=True)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--direct", action="store_true", help="also time the queries without the mirror")
    parser.add_argument("--skip-build", action="store_true", help="keep an existing mirror")
    parser.add_argument("--no-iteration", action="store_true", help="do not add an iteration to the store")
    parser.add_argument("--new-iterations", type=int, default=1, help="iterations added, each synced (default 1)")
    parser.add_argument("--json")
    args = parser.parse_args()
    store = open_for_reading(args.db)
    out: dict[str, Any] = {"db": args.db}
    path = mirror_path(store)
    assert path is not None
    with store.read() as s:
        run = s.scalar(select(Run.id).where(Run.method == "mils").order_by(Run.id).limit(1))
        out["candidates"] = s.scalar(select(func.max(Candidate.id)))
    if not args.skip_build:
        for p in (path, path.with_name(path.name + ".wal")):
            p.unlink(missing_ok=True)
        start = time.perf_counter()
        con, info = open_analysis(store, passthrough=False)
        con.close()
        out["build"] = {"seconds": time.perf_counter() - start, "rows": info.report.rows if info.report else {},
                        "mirror_bytes": path.stat().st_size}
        print("build", json.dumps(out["build"]), flush=True)
    start = time.perf_counter()
    report = sync_mirror(store, path)  # whatever changed since the mirror was last synced
    out["catch_up"] = {"seconds": time.perf_counter() - start, "rows": report.rows}
    print("catch-up sync", json.dumps(out["catch_up"]), flush=True)
    opens, synced = [], 0
    for _ in range(5):
        start = time.perf_counter()
        con, info = open_analysis(store, passthrough=False)
        con.close()
        opens.append(time.perf_counter() - start)
        # SQLite: never a sync. PostgreSQL: a write anywhere on the server makes the marker move; the
        # sync then finds nothing to copy.
        assert info.report is None or not info.report.rows
        synced += info.report is not None
    start = time.perf_counter()
    report = sync_mirror(store, path)
    out["noop"] = {"open_analysis_median_s": statistics.median(opens), "sync_mirror_s": time.perf_counter() - start,
                   "rows": report.rows, "opens_that_synced": synced}
    print("noop", json.dumps(out["noop"]), flush=True)
    queries = all_queries(store, run)
    out["queries"] = run_queries(store, queries, args.repeat, None)
    for name, t in out["queries"].items():
        print(f"  {t['median_s']:8.4f} s  {t['rows']:>9,} rows  {name}", flush=True)
    if args.direct:
        out["direct"] = run_queries(store, queries, 1, "off")
        for name, t in out["direct"].items():
            print(f"  direct {t['median_s']:8.4f} s  {name}", flush=True)
    for _ in range(0 if args.no_iteration else args.new_iterations):
        wrote = add_iteration(store, run)
        start = time.perf_counter()
        report = sync_mirror(store, path)
        out.setdefault("new_iterations", []).append({
            **wrote, "sync_s": time.perf_counter() - start, "rows": report.rows,
            "sync_seconds_inside": report.seconds, "checkpoint_s": report.checkpoint_seconds})
        print("new iteration", json.dumps(out["new_iterations"][-1]), flush=True)
    if out.get("new_iterations"):
        syncs = [n["sync_s"] for n in out["new_iterations"]]
        print(f"new iterations synced in {min(syncs):.2f}-{max(syncs):.2f} s (median {statistics.median(syncs):.2f})")
    store.dispose()
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
