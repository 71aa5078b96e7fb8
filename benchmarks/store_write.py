"""How fast the store takes candidate rows, and how fast a run finds where to resume.

Usage::

    .venv/bin/python benchmarks/store_write.py                 # SQLite (temp file) + PostgreSQL if reachable
    .venv/bin/python benchmarks/store_write.py --db sqlite     # only SQLite
    .venv/bin/python benchmarks/store_write.py --db postgresql+psycopg://postgres@127.0.0.1:5432/test

One synthetic MILS run over ``--items`` items, ``--iterations`` iterations, ``--candidates`` new
candidates per (item, iteration), written four ways:

1. **per step**: ``capstore.runs.steps.commit_step`` — ONE transaction per (item, iteration)
   holding the lease check, texts, 50 candidates, the iteration state (and the caption at the end);
2. **per batch**: the run engine's own path, ``commit_steps`` of one iteration of a batch of
   ``--batch`` items (the default ``batch_images``) in ONE transaction;
3. **bulk, Core**: one transaction, ``INSERT`` executemany of candidate dicts through SQLAlchemy Core;
4. **bulk, capstore**: one ``store.write(bulk=True)`` transaction, ``capstore.store.bulk.insert_rows``
   (multi-row ``INSERT`` statements with references checked set-wise on SQLite, ``COPY`` on PostgreSQL).

rows/s = candidate rows / wall time of the whole transaction(s) (iteration states, work-item updates
and the commit included in the time, not in the row count); the bulk paths also report the candidate
``INSERT`` alone. ``--interrupted`` items are left part-way (a dead worker's expired lease), and the
time to find the unfinished work is measured as the engine finds it (``claim``), by work items
(``iterations_done < last``) and by iteration states (per-item ``max(iteration)``); all three must
name the same items. Numbers and discussion: ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, Iterator

from sqlalchemy import create_engine, func, insert, select, text, update

from capstore.runs.leases import claim
from capstore.runs.steps import CANDIDATE_COLUMNS, STATE_COLUMNS, Step, commit_step, commit_steps
from capstore.store import Store, open_store
from capstore.store.bulk import insert_rows
from capstore.store.content import insert_ignore, put_texts
from capstore.store.schema import Candidate, Dataset, IterationState, Item, Run, Split, WorkItem, utcnow

PG_DEFAULT = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
WORKER = "bench:1:writer"
DEAD_WORKER = "bench:999999999:dead"
N_TEXTS = 20_000  # distinct candidate texts; candidates of one (item, iteration) are distinct
KEEP = 5


@dataclass
class Setup:
    run_id: int
    items: list[tuple[int, int]]  # (work item id, item id) in order
    texts: list[str]
    shas: list[str]
    iterations: int
    candidates: int
    done_iters: dict[int, int] = field(default_factory=dict)  # item id -> iterations written


def _text_index(item_id: int, iteration: int, k: int, candidates: int) -> int:
    return (item_id * 131 + iteration * candidates + k) % N_TEXTS


def _score(item_id: int, iteration: int, k: int) -> float:
    return random.Random(item_id * 1_000_003 + iteration * 1009 + k).random()


def prepare(store: Store, n_items: int, iterations: int, candidates: int) -> Setup:
    """A dataset, a MILS run, its leased work items and the candidate texts (not timed)."""
    texts = [f"candidate caption number {i}: a {['red', 'blue', 'green'][i % 3]} thing on a table" for i in range(N_TEXTS)]
    with store.write() as s:
        insert_ignore(s, Dataset, [{"name": "bench"}])
        ds = s.scalar(select(Dataset.id).where(Dataset.name == "bench"))
        insert_ignore(s, Split, [{"dataset_id": ds, "name": "test"}])
        split = s.scalar(select(Split.id).where(Split.dataset_id == ds))
        insert_ignore(s, Item, [{"split_id": split, "external_id": str(i)} for i in range(n_items)])
        item_ids = s.scalars(select(Item.id).where(Item.split_id == split).order_by(Item.id)).all()
        run = Run(method="mils", config={"iterations": iterations, "bench": True}, config_hash="0" * 64,
                  split_id=split, status="running")
        s.add(run)
        s.flush()
        expires = utcnow() + timedelta(hours=1)
        s.execute(insert(WorkItem), [{"run_id": run.id, "item_id": i, "status": "leased", "lease_owner": WORKER,
                                      "lease_expires_at": expires, "attempts": 1, "iterations_done": -1,
                                      "updated_at": utcnow()} for i in item_ids])
        shas = put_texts(s, texts)
        work = s.execute(select(WorkItem.id, WorkItem.item_id).where(WorkItem.run_id == run.id)
                         .order_by(WorkItem.item_id)).all()
    return Setup(run.id, [(w, i) for w, i in work], texts, shas, iterations, candidates)


def _new(setup: Setup, item_id: int, iteration: int) -> list[tuple[int, float]]:
    """(text index, score) of the new candidates of one step, best first."""
    pairs = [(_text_index(item_id, iteration, k, setup.candidates), _score(item_id, iteration, k))
             for k in range(setup.candidates)]
    return sorted(pairs, key=lambda p: -p[1])


def _step(setup: Setup, work_id: int, item_id: int, it: int) -> Step:
    new = _new(setup, item_id, it)
    final = it == setup.iterations - 1
    kept = [(setup.texts[t], sc) for t, sc in new[:KEEP]]
    return Step(work_id, item_id, it, new=[(setup.texts[t], "generated", sc) for t, sc in new], kept=kept,
                final=final, caption=(kept[0][0], kept[0][1], it) if final else None)


def write_per_step(store: Store, setup: Setup, items: list[tuple[int, int]]) -> int:
    """``commit_step`` per (item, iteration); returns candidate rows written."""
    rows = 0
    for work_id, item_id in items:
        for it in range(setup.done_iters.get(item_id, setup.iterations)):
            step = _step(setup, work_id, item_id, it)
            commit_step(store, setup.run_id, WORKER, step, lease_seconds=3600)
            rows += len(step.new)
    return rows


def write_per_batch(store: Store, setup: Setup, items: list[tuple[int, int]], batch: int) -> int:
    """The engine's path: ``commit_steps`` of one iteration of ``batch`` items at a time."""
    rows = 0
    for start in range(0, len(items), batch):
        group = items[start:start + batch]
        for it in range(setup.iterations):
            steps = [_step(setup, w, i, it) for w, i in group if it < setup.done_iters.get(i, setup.iterations)]
            if steps:
                assert not commit_steps(store, setup.run_id, WORKER, steps, lease_seconds=3600)
                rows += sum(len(st.new) for st in steps)
    return rows


def _bulk_rows(setup: Setup, items: list[tuple[int, int]]) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Candidate rows and iteration-state rows (as tuples in column order) of ``items``."""
    cands: list[tuple[Any, ...]] = []
    states: list[tuple[Any, ...]] = []
    now = utcnow()
    for _, item_id in items:
        for it in range(setup.done_iters.get(item_id, setup.iterations)):
            new = _new(setup, item_id, it)
            cands.extend((setup.run_id, item_id, it, setup.shas[t], "generated", sc, r + 1) for r, (t, sc) in enumerate(new))
            states.append((setup.run_id, item_id, it, setup.shas[new[0][0]], new[0][1],
                           statistics.fmean(sc for _, sc in new[:KEEP]), len(new),
                           [[setup.shas[t], sc] for t, sc in new[:KEEP]], now))
    return cands, states


def _finish_items(s, setup: Setup, items: list[tuple[int, int]]) -> None:  # type: ignore[no-untyped-def]
    """Move the work items to what was written: done, or part-way under a dead worker's expired lease."""
    done = [w for w, i in items if setup.done_iters.get(i, setup.iterations) == setup.iterations]
    if done:
        s.execute(update(WorkItem).where(WorkItem.id.in_(done)).values(
            status="done", lease_owner=None, lease_expires_at=None, iterations_done=setup.iterations - 1))
    expired = utcnow() - timedelta(minutes=5)
    for w, i in items:
        n = setup.done_iters.get(i, setup.iterations)
        if n < setup.iterations:
            s.execute(update(WorkItem).where(WorkItem.id == w).values(
                lease_owner=DEAD_WORKER, lease_expires_at=expired, iterations_done=n - 1))


@dataclass
class Timing:
    rows: int  # candidate rows
    insert_s: float  # the candidate INSERT/COPY alone
    total_s: float  # the whole transaction: candidates, iteration states, work items, commit


def write_bulk_core(store: Store, setup: Setup, items: list[tuple[int, int]]) -> Timing:
    """One transaction, SQLAlchemy Core executemany of dicts."""
    cands, states = _bulk_rows(setup, items)
    cand_dicts = [dict(zip(CANDIDATE_COLUMNS, row)) for row in cands]
    state_dicts = [dict(zip(STATE_COLUMNS, row)) for row in states]
    start = time.perf_counter()
    with store.write() as s:
        s.execute(insert(Candidate), cand_dicts)
        inserted = time.perf_counter()
        s.execute(insert(IterationState), state_dicts)
        _finish_items(s, setup, items)
    return Timing(len(cands), inserted - start, time.perf_counter() - start)


def write_bulk_capstore(store: Store, setup: Setup, items: list[tuple[int, int]]) -> Timing:
    """One bulk transaction through ``capstore.store.bulk.insert_rows`` (multi-row INSERT / COPY)."""
    cands, states = _bulk_rows(setup, items)
    start = time.perf_counter()
    with store.write(bulk=True) as s:
        insert_rows(s, Candidate.__table__, CANDIDATE_COLUMNS, cands)
        inserted = time.perf_counter()
        insert_rows(s, IterationState.__table__, STATE_COLUMNS, states)
        _finish_items(s, setup, items)
    return Timing(len(cands), inserted - start, time.perf_counter() - start)


def _check_written(store: Store, setup: Setup, item_id: int) -> None:
    """What a path wrote reads back through the ORM as the engine wrote it (types, JSON, ranks)."""
    new = _new(setup, item_id, 0)
    with store.read() as s:
        state = s.scalars(select(IterationState).where(IterationState.run_id == setup.run_id,
                                                       IterationState.item_id == item_id,
                                                       IterationState.iteration == 0)).one()
        ranks = s.execute(select(Candidate.text_sha, Candidate.rank).where(
            Candidate.run_id == setup.run_id, Candidate.item_id == item_id, Candidate.iteration == 0)).all()
    assert state.kept == [[setup.shas[t], sc] for t, sc in new[:KEEP]] and state.created_at is not None
    assert sorted(ranks, key=lambda r: r[1]) == [(setup.shas[t], r + 1) for r, (t, _) in enumerate(new)]


def _timed(fn: Callable[[], Any], repeat: int = 3) -> tuple[Any, list[float]]:
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return result, times


def find_unfinished(store: Store, setup: Setup) -> dict[str, Any]:
    """Time the three ways of finding the unfinished items; they must agree."""
    last = setup.iterations - 1
    run = setup.run_id

    def by_work_items() -> set[int]:
        with store.read() as s:
            return set(s.scalars(select(WorkItem.item_id).where(WorkItem.run_id == run, WorkItem.iterations_done < last)))

    def by_states() -> set[int]:
        top = (select(IterationState.item_id, func.max(IterationState.iteration).label("top"))
               .where(IterationState.run_id == run).group_by(IterationState.item_id).subquery())
        with store.read() as s:
            rows = s.execute(select(WorkItem.item_id, top.c.top).outerjoin(top, top.c.item_id == WorkItem.item_id)
                             .where(WorkItem.run_id == run)).all()
        return {i for i, t in rows if t is None or t < last}

    expected = {i for i, n in setup.done_iters.items() if n < setup.iterations}
    wi, wi_t = _timed(by_work_items)
    st, st_t = _timed(by_states)
    start = time.perf_counter()
    claimed = claim(store, run, "bench:2:resumer", n=len(setup.items), lease_seconds=600)
    claim_t = time.perf_counter() - start
    got = {item for _, item, _ in claimed}
    assert wi == st == got == expected, (len(wi), len(st), len(got), len(expected))
    return {"unfinished_items": len(expected), "claim_s": claim_t,
            "work_items_query_s": statistics.median(wi_t), "iteration_states_query_s": statistics.median(st_t)}


def bench(store: Store, args: argparse.Namespace) -> dict[str, Any]:
    setup = prepare(store, args.items, args.iterations, args.candidates)
    rng = random.Random(0)
    interrupted = setup.items[len(setup.items) - args.interrupted:] if args.interrupted else []
    setup.done_iters = {item: rng.randrange(setup.iterations) for _, item in interrupted}
    per_step_items = setup.items[: args.step_items]
    per_batch_items = setup.items[args.step_items: args.step_items + args.batch_items]
    rest = setup.items[args.step_items + args.batch_items:]
    half = len(rest) // 2
    out: dict[str, Any] = {"dialect": store.dialect, "items": args.items, "iterations": args.iterations,
                           "candidates_per_step": args.candidates}
    start = time.perf_counter()
    rows = write_per_step(store, setup, per_step_items)
    secs = time.perf_counter() - start
    out["per_step"] = {"rows": rows, "seconds": secs, "rows_per_s": rows / secs,
                       "steps_per_s": rows / args.candidates / secs}
    start = time.perf_counter()
    rows = write_per_batch(store, setup, per_batch_items, args.batch)
    secs = time.perf_counter() - start
    out["per_batch"] = {"rows": rows, "seconds": secs, "rows_per_s": rows / secs, "batch": args.batch,
                        "transactions_per_s": -(-len(per_batch_items) // args.batch) * args.iterations / secs}
    for name, fn, part in (("bulk_core", write_bulk_core, rest[:half]), ("bulk_capstore", write_bulk_capstore, rest[half:])):
        t = fn(store, setup, part)
        out[name] = {"rows": t.rows, "insert_s": t.insert_s, "total_s": t.total_s,
                     "insert_rows_per_s": t.rows / t.insert_s, "rows_per_s": t.rows / t.total_s}
    for part in (per_step_items, per_batch_items, rest[:half], rest[half:]):
        written = [item for _, item in part if setup.done_iters.get(item, setup.iterations) > 0]
        if written:
            _check_written(store, setup, written[0])
    with store.read() as s:
        out["candidates_stored"] = s.scalar(select(func.count()).select_from(Candidate).where(Candidate.run_id == setup.run_id))
    out["resume"] = find_unfinished(store, setup)
    return out


def _sqlite_store() -> Iterator[Store]:
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(str(Path(tmp) / "bench.db"))
        try:
            yield store
        finally:
            store.dispose()


def _pg_store(url: str) -> Iterator[Store]:
    """A store in a fresh schema of ``url``, dropped afterwards."""
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(url)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    sep = "&" if "?" in url else "?"
    store = open_store(f"{url}{sep}options=-csearch_path%3D{schema}")
    try:
        yield store
    finally:
        store.dispose()
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


def _pg_reachable(url: str) -> bool:
    try:
        engine = create_engine(url)
        with engine.connect():
            pass
        engine.dispose()
        return True
    except Exception:
        return False


def _report(r: dict[str, Any]) -> str:
    res = r["resume"]
    return "\n".join([
        f"{r['dialect']}: {r['items']} items x {r['iterations']} iterations x {r['candidates_per_step']} candidates "
        f"({r['candidates_stored']:,} candidate rows stored)",
        f"  per step (commit_step) : {r['per_step']['rows_per_s']:>10,.0f} rows/s  "
        f"({r['per_step']['steps_per_s']:,.0f} transactions/s, {r['per_step']['rows']:,} rows)",
        f"  per batch (commit_steps, {r['per_batch']['batch']} items): {r['per_batch']['rows_per_s']:>10,.0f} rows/s  "
        f"({r['per_batch']['transactions_per_s']:,.0f} transactions/s, {r['per_batch']['rows']:,} rows)",
        *(f"  bulk, {label:<17}: {r[key]['rows_per_s']:>10,.0f} rows/s  (candidate INSERT alone "
          f"{r[key]['insert_rows_per_s']:,.0f} rows/s; {r[key]['rows']:,} rows)"
          for key, label in (("bulk_core", "Core executemany"), ("bulk_capstore", "capstore insert_rows"))),
        f"  resume: {res['unfinished_items']} unfinished items found by claim in {res['claim_s']:.3f} s, "
        f"by work_items in {res['work_items_query_s']:.3f} s, by iteration_states in {res['iteration_states_query_s']:.3f} s",
    ])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--db", action="append", help="'sqlite' (a temp file) or a PostgreSQL URL; repeatable. "
                   "Default: SQLite, and PostgreSQL at CAPSTORE_TEST_PG_URL or 127.0.0.1:5432/test if reachable.")
    p.add_argument("--items", type=int, default=5000)
    p.add_argument("--iterations", type=int, default=10)
    p.add_argument("--candidates", type=int, default=50)
    p.add_argument("--step-items", type=int, default=100, help="items written by the per-step path")
    p.add_argument("--batch-items", type=int, default=400, help="items written by the per-batch path (the rest in bulk)")
    p.add_argument("--batch", type=int, default=16, help="items per commit_steps transaction (batch_images)")
    p.add_argument("--interrupted", type=int, default=250, help="items left part-way, to be found on resume")
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args()
    if not 0 <= args.interrupted <= args.items - args.step_items - args.batch_items:
        p.error("--interrupted items must come from those written in bulk (at most --items minus --step-items "
                "minus --batch-items)")
    pg = os.environ.get("CAPSTORE_TEST_PG_URL", PG_DEFAULT)
    targets = args.db or (["sqlite"] + ([pg] if _pg_reachable(pg) else []))
    results = []
    for target in targets:
        stores = _sqlite_store() if target == "sqlite" else _pg_store(target)
        for store in stores:
            results.append(bench(store, args))
            print(_report(results[-1]), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
