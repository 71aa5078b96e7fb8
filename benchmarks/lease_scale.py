"""Lease scale: many concurrent claimers on one PostgreSQL store, doing no model work at all.

N claimers (threads spread over a few processes, each with its own heartbeat, exactly as
``capstore worker`` runs them) share one run of ``--items`` items × ``--steps`` steps: claim a
batch (``capstore.runs.leases.claim``), commit its steps one iteration at a time
(``capstore.runs.steps.commit_steps``, the engine's own path, each step carrying ``--candidates``
new candidate texts), repeat until nothing is left. The work between claim and commit is nothing,
so everything measured is the store's load: claims/s, commits/s, steps/s, claim and commit latency
(p50/p99/max), and the checks that must hold: no item claimed twice, no step lost, every step
committed once. A sweep over claimer counts (fresh runs, fixed time windows) finds where the store
saturates (the fewest claimers reaching 90% of the best steps/s).

Connections: a real worker keeps 2 open (its loop and its heartbeat), and PostgreSQL's default
``max_connections`` is 100, so 64 or 256 workers cannot each have their own here. The claimers'
transactions share ``--connections`` connections, handed out first come, first served (what
PgBouncer's transaction pooling does); the wait for one counts in the claim and commit latencies.
Heartbeats (every lease/3) use 2 more connections per process. Connections are opened before the
clock starts.

    .venv/bin/python benchmarks/lease_scale.py                                   # 64 and 256 claimers + sweep
    .venv/bin/python benchmarks/lease_scale.py --claimers 64 --candidates 50 --no-sweep --json out.json
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import statistics
import threading
import time
from collections import Counter, deque
from typing import Any

import bench_common as bc

SWEEP = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def _setup_run(url: str, items: int, steps: int) -> int:
    """A run of ``items`` pending work items (no images: no model ever looks at them)."""
    from capstore.store import open_store
    from capstore.store.schema import Dataset, Item, Run, Split, WorkItem, utcnow

    store = open_store(url)
    with store.write() as s:
        ds = Dataset(name=f"lease-scale-{time.time_ns()}")
        s.add(ds)
        s.flush()
        split = Split(dataset_id=ds.id, name="test")
        s.add(split)
        s.flush()
        rows = [Item(split_id=split.id, external_id=f"{i:05d}") for i in range(items)]
        s.add_all(rows)
        s.flush()
        run = Run(method="mils", config={"method": "mils", "dataset": ds.name, "iterations": steps - 1},
                  config_hash="0" * 64, split_id=split.id, status="running")
        s.add(run)
        s.flush()
        now = utcnow()
        s.add_all(WorkItem(run_id=run.id, item_id=it.id, status="pending", iterations_done=-1, updated_at=now)
                  for it in rows)
        run_id = run.id
    store.dispose()
    return run_id


def _pooled_store(url: str, connections: int):  # type: ignore[no-untyped-def]
    """A Store whose engine holds ``connections`` connections, all opened now."""
    from sqlalchemy import create_engine

    from capstore.store.engine import Store

    engine = create_engine(url, pool_size=connections, max_overflow=0, pool_timeout=3600, pool_pre_ping=False)
    opened = [engine.connect() for _ in range(connections)]
    for conn in opened:
        conn.close()
    return Store(url=url, engine=engine)


class FairGate:
    """At most ``n`` holders; waiters are served in arrival order (a freed slot is handed over, so a
    thread that just released one cannot take it back ahead of them, as it can from SQLAlchemy's pool)."""

    def __init__(self, n: int) -> None:
        self.free, self.lock, self.waiters = n, threading.Lock(), deque()  # type: ignore[var-annotated]

    def __enter__(self) -> None:
        with self.lock:
            if self.free:
                self.free -= 1
                return
            turn = threading.Event()
            self.waiters.append(turn)
        turn.wait()

    def __exit__(self, *exc: object) -> None:
        with self.lock:
            if self.waiters:
                self.waiters.popleft().set()
            else:
                self.free += 1


def _claimer(store, beats, gate: FairGate, run_id: int, name: str, args: dict[str, Any], stop_at: float,  # type: ignore[no-untyped-def]
             out: dict[str, Any]) -> None:
    from capstore.runs.heartbeat import Heartbeat
    from capstore.runs.leases import claim, new_worker_id
    from capstore.runs.steps import Step, commit_steps

    worker = f"{new_worker_id()}-{name}"
    rng = random.Random(name)
    steps, cands, lease = args["steps"], args["candidates"], args["lease"]
    with Heartbeat(beats, run_id, worker, lease):
        while time.monotonic() < stop_at:
            start = time.perf_counter()
            with gate:
                batch = claim(store, run_id, worker, args["batch"], lease)
            out["claim_s"].append(time.perf_counter() - start)
            if not batch:
                break
            out["claimed"].extend(wid for wid, _, _ in batch)
            for iteration in range(steps):
                if time.monotonic() >= stop_at:
                    return
                batch_steps = []
                for wid, item_id, _ in batch:
                    new = [(f"run {run_id} item {item_id} iteration {iteration} candidate {k}", "generated", rng.random())
                           for k in range(cands)]
                    kept = sorted(((t, sc) for t, _, sc in new), key=lambda p: -p[1])[:50]
                    final = iteration == steps - 1
                    batch_steps.append(Step(wid, item_id, iteration, new, kept, final=final,
                                            caption=(kept[0][0], kept[0][1], iteration) if final and kept else None))
                start = time.perf_counter()
                with gate:
                    out["lost"] += len(commit_steps(store, run_id, worker, batch_steps, lease))
                out["commit_s"].append(time.perf_counter() - start)
                out["steps"] += len(batch_steps)


def _process(url: str, run_id: int, names: list[str], connections: int, args: dict[str, Any], go, results,  # type: ignore[no-untyped-def]
             window: float | None) -> None:
    """One process's claimers (threads); puts its measurements on ``results``."""
    from capstore.store import retry

    store, beats, gate = _pooled_store(url, connections), _pooled_store(url, 2), FairGate(connections)
    outs = [{"claim_s": [], "commit_s": [], "claimed": [], "lost": 0, "steps": 0, "error": None} for _ in names]
    go.wait()
    start = time.monotonic()
    stop_at = start + window if window else float("inf")

    def one(i: int) -> None:
        try:
            _claimer(store, beats, gate, run_id, names[i], args, stop_at, outs[i])
        except Exception as exc:  # reported, and the benchmark fails on it
            outs[i]["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(names))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - start
    store.dispose()
    beats.dispose()
    results.put({"wall_s": wall, "retried": getattr(retry, "retried", 0),
                 "claim_s": [x for o in outs for x in o["claim_s"]], "commit_s": [x for o in outs for x in o["commit_s"]],
                 "claimed": [x for o in outs for x in o["claimed"]], "lost": sum(o["lost"] for o in outs),
                 "steps": sum(o["steps"] for o in outs), "errors": [o["error"] for o in outs if o["error"]]})


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def measure(url: str, claimers: int, args: dict[str, Any], window: float | None = None) -> dict[str, Any]:
    """``claimers`` claimers on a fresh run; to the end (window None) or for ``window`` seconds."""
    from sqlalchemy import func, select

    from capstore.store import open_store
    from capstore.store.schema import IterationState, WorkItem

    items = args["items"] if window is None else args["sweep_items"]
    run_id = _setup_run(url, items, args["steps"])
    procs_n = max(1, min(args["processes"], claimers))
    names = [f"c{i}" for i in range(claimers)]
    groups = [names[p::procs_n] for p in range(procs_n)]
    per_proc = max(1, args["connections"] // procs_n)
    ctx = multiprocessing.get_context("spawn")
    go, results = ctx.Event(), ctx.Queue()
    pools = [min(per_proc, len(g)) for g in groups]
    procs = [ctx.Process(target=_process, args=(url, run_id, g, pool, args, go, results, window))
             for g, pool in zip(groups, pools)]
    for p in procs:
        p.start()
    time.sleep(min(10.0, 2.0 + 0.5 * procs_n))  # imports done and connections open before the clock starts
    go.set()
    parts = [results.get(timeout=7200) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    wall = max(r["wall_s"] for r in parts)
    claim_s = [x for r in parts for x in r["claim_s"]]
    commit_s = [x for r in parts for x in r["commit_s"]]
    claimed = Counter(x for r in parts for x in r["claimed"])
    steps = sum(r["steps"] for r in parts)
    store = open_store(url)
    with store.read() as s:
        states = s.scalar(select(func.count()).select_from(IterationState).where(IterationState.run_id == run_id))
        done = s.scalar(select(func.count()).select_from(WorkItem).where(WorkItem.run_id == run_id, WorkItem.status == "done"))
        reclaimed = s.scalar(select(func.count()).select_from(WorkItem).where(WorkItem.run_id == run_id, WorkItem.attempts > 1))
    store.dispose()
    return {
        "claimers": claimers, "processes": procs_n, "connections": sum(pools), "heartbeat_connections": 2 * procs_n, "window_s": window,
        "items": items, "wall_s": round(wall, 2),
        "claims": len(claim_s), "claims_per_s": round(len(claim_s) / wall, 1),
        "items_claimed_per_s": round(sum(claimed.values()) / wall, 1),
        "commits": len(commit_s), "commits_per_s": round(len(commit_s) / wall, 1),
        "steps_per_s": round(steps / wall, 1), "steps_committed": steps, "iteration_states": states,
        "items_done": done, "candidate_rows_per_s": round(steps * args["candidates"] / wall, 1),
        "claim_ms": {"p50": round(1000 * statistics.median(claim_s), 2) if claim_s else None,
                     "p99": round(1000 * _pct(claim_s, 0.99), 2), "max": round(1000 * max(claim_s, default=0), 2)},
        "commit_ms": {"p50": round(1000 * statistics.median(commit_s), 2) if commit_s else None,
                      "p99": round(1000 * _pct(commit_s, 0.99), 2), "max": round(1000 * max(commit_s, default=0), 2)},
        "double_claims": sum(1 for n in claimed.values() if n > 1) + int(reclaimed or 0),
        "lost_steps": sum(r["lost"] for r in parts), "retried_transactions": sum(r["retried"] for r in parts),
        "errors": [e for r in parts for e in r["errors"]]}


def _line(r: dict[str, Any]) -> str:
    return (f"{r['claimers']:>4} claimers ({r['processes']} proc, {r['connections']} conn): {r['wall_s']:7.1f} s, "
            f"{r['claims_per_s']:7.1f} claims/s, {r['commits_per_s']:7.1f} commits/s, {r['steps_per_s']:8.1f} steps/s, "
            f"claim p50/p99 {r['claim_ms']['p50']}/{r['claim_ms']['p99']} ms, commit p99 {r['commit_ms']['p99']} ms, "
            f"double claims {r['double_claims']}, lost {r['lost_steps']}, retried {r['retried_transactions']}"
            + (f", ERRORS {r['errors'][:2]}" if r["errors"] else ""))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--pg-url", default=bc.PG_DEFAULT)
    p.add_argument("--claimers", type=int, nargs="+", default=[64, 256], help="full runs with these claimer counts")
    p.add_argument("--items", type=int, default=5000)
    p.add_argument("--steps", type=int, default=10, help="steps per item (MILS: iterations + 1)")
    p.add_argument("--batch", type=int, default=16, help="items per claim (the engine's --batch-images default)")
    p.add_argument("--candidates", type=int, default=0, help="new candidate texts per step (0: no-op steps; MILS: 50)")
    p.add_argument("--lease", type=float, default=60.0)
    p.add_argument("--processes", type=int, default=2, help="client processes the claimers are spread over")
    p.add_argument("--connections", type=int, default=40, help="connections for claims and commits, all processes together")
    p.add_argument("--no-sweep", action="store_true")
    p.add_argument("--sweep", type=int, nargs="+", default=list(SWEEP))
    p.add_argument("--sweep-items", type=int, default=10000, help="items of each sweep point's run (enough for its window)")
    p.add_argument("--window", type=float, default=15.0, help="seconds per sweep point")
    p.add_argument("--json", default=None)
    a = p.parse_args()
    if not bc.pg_reachable(a.pg_url):
        raise SystemExit(f"PostgreSQL not reachable at {a.pg_url}")
    args = {k: getattr(a, k) for k in ("items", "steps", "batch", "candidates", "lease", "processes", "connections",
                                        "sweep_items")}
    res: dict[str, Any] = {"machine": bc.machine(), "load_average_at_start": os.getloadavg()[0], "settings": args}
    print(f"{res['machine']}; {a.items} items x {a.steps} steps, batch {a.batch}, {a.candidates} candidates a step, "
          f"lease {a.lease:g} s", flush=True)
    with bc.pg_schema(a.pg_url) as url:
        res["full"] = []
        for n in a.claimers:
            r = measure(url, n, args)
            res["full"].append(r)
            print("full  " + _line(r), flush=True)
        if not a.no_sweep:
            res["sweep"] = []
            for n in a.sweep:
                r = measure(url, n, args, window=a.window)
                res["sweep"].append(r)
                print("sweep " + _line(r), flush=True)
            best = max(r["steps_per_s"] for r in res["sweep"])
            res["saturates_at"] = min(r["claimers"] for r in res["sweep"] if r["steps_per_s"] >= 0.9 * best)
            print(f"saturation: {res['saturates_at']} claimers reach 90% of the best {best:.0f} steps/s", flush=True)
    res["load_average_at_end"] = os.getloadavg()[0]
    bc.write_json(a.json, res)


if __name__ == "__main__":
    main()
