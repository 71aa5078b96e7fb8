"""Three workers on one run: how often the MILS pool is encoded, and how fast a SIGKILLed worker's items come back.

Three ``capstore worker`` processes start at the same moment on a fresh store (a MILS run over the
24 demo images: the tiny CLIP scorer on CPU, the shared MILS pool of 28,767 lines, the scripted
``fake:slow`` generator, 3 iterations, 4 images a batch). Counted from the usage events: how many
workers encoded the pool (events that computed embeddings) and how many pool embeddings were
computed in all. Once all three have the pool and a worker holds a batch, that worker is SIGKILLed; the
takeover time is from the kill until every item it held is leased by another worker (no
``resume``: the survivors wait, and the dead worker's leases run out because its heartbeat stopped).

    .venv/bin/python benchmarks/workers.py                      # SQLite + PostgreSQL, 60-s leases (the default)
    .venv/bin/python benchmarks/workers.py --lease 6 --db sqlite --json out.json
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import bench_common as bc

WORKERS = 3


def _poll(store, run_id: int) -> tuple[int, dict[int, str]]:  # type: ignore[no-untyped-def]
    """(workers that have the pool, leased work item id -> owner)."""
    from sqlalchemy import func, select

    from capstore.store.schema import UsageEvent, WorkItem

    with store.read() as s:
        have_pool = s.scalar(select(func.count(func.distinct(UsageEvent.worker))).where(
            UsageEvent.run_id == run_id, UsageEvent.stage == "encode_pool"))
        leased = dict(s.execute(select(WorkItem.id, WorkItem.lease_owner).where(
            WorkItem.run_id == run_id, WorkItem.status == "leased")).all())
    return int(have_pool or 0), leased


def measure(url: str, models: Any, pool: Path, prompt: Path, lease: float) -> dict[str, Any]:
    from sqlalchemy import select

    from capstore.datasets import make_demo
    from capstore.runs import RunConfig, create_run
    from capstore.store import open_store
    from capstore.store.schema import Run, UsageEvent, WorkItem

    store = open_store(url)
    make_demo(store)
    cfg = RunConfig(method="mils", dataset="demo", scorer=models.specs["scorer"], generator="fake:slow",
                    iterations=3, keep=5, requested=8, batch_images=4, device="cpu")
    run_id = create_run(store, cfg, pool_file=str(pool), prompt_file=str(prompt))
    env = {**os.environ, "CAPSTORE_LEASE_SECONDS": str(lease)}
    cmd = [sys.executable, "-m", "capstore.cli.main", "worker", str(run_id), "--quiet", "--db", url]
    start = time.monotonic()
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(WORKERS)]
    pids = {str(p.pid): p for p in procs}
    victim, held = None, []
    while victim is None:  # every worker has the pool (encoded or read from the cache) and one holds a batch
        if any(p.poll() is not None for p in procs):
            raise SystemExit("a worker ended before the kill: " + " | ".join(p.communicate()[1][-300:] for p in procs))
        have_pool, leased = _poll(store, run_id)
        owners = {owner for owner in leased.values() if owner and owner.split(":")[1] in pids}
        if have_pool == WORKERS and owners:
            victim = sorted(owners)[0]
            held = [wid for wid, owner in leased.items() if owner == victim]
        else:
            time.sleep(0.02)
    killed_proc = pids[victim.split(":")[1]]
    os.kill(killed_proc.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    taken_at = None
    while taken_at is None:
        with store.read() as s:
            owners = dict(s.execute(select(WorkItem.id, WorkItem.lease_owner).where(WorkItem.id.in_(held))).all())
            statuses = set(s.scalars(select(WorkItem.status).where(WorkItem.id.in_(held))))
        if all(owner != victim for owner in owners.values()) or statuses == {"done"}:
            taken_at = time.monotonic()
        else:
            time.sleep(0.02)
    outs = [p.communicate(timeout=600) for p in procs if p is not killed_proc]
    finished_at = time.monotonic()
    survivors = [p for p in procs if p is not killed_proc]
    if any(p.returncode != 0 for p in survivors):
        raise SystemExit(f"a surviving worker failed: {outs}")
    with store.read() as s:
        events = s.execute(select(UsageEvent.worker, UsageEvent.items, UsageEvent.cached, UsageEvent.calls,
                                  UsageEvent.wall_seconds).where(UsageEvent.stage == "encode_pool")).all()
        status = s.get(Run, run_id).status
        done = len(s.scalars(select(WorkItem.id).where(WorkItem.run_id == run_id, WorkItem.status == "done")).all())
    store.dispose()
    encoders = [e for e in events if e.calls > 0]
    return {"lease_s": lease, "pool_lines": sum(1 for _ in pool.open(encoding="utf-8")),
            "workers_needing_pool": len({e.worker for e in events}), "workers_encoding_pool": len(encoders),
            "pool_embeddings_computed": sum(e.items - e.cached for e in events),
            "pool_unique_texts": max((e.items for e in events), default=0),
            "encode_wall_s": max((e.wall_seconds for e in encoders), default=0.0),
            "items_held_by_killed_worker": len(held), "takeover_s": taken_at - killed_at,
            "run_wall_s": finished_at - start, "run_status": status, "items_done": done}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--db", choices=("both", "sqlite", "postgresql"), default="both")
    p.add_argument("--pg-url", default=bc.PG_DEFAULT)
    p.add_argument("--models", default=str(bc.REPO / "capstore-data" / "models"), help="tiny models folder")
    p.add_argument("--pool", type=Path, default=None, help="pool file (default: the shared MILS pool)")
    p.add_argument("--lease", type=float, default=60.0, help="lease seconds (60: capstore's default)")
    p.add_argument("--json", default=None)
    args = p.parse_args()

    pool = args.pool or bc.shared_file(bc.POOL)
    prompt = bc.shared_file(bc.PROMPT)
    models = bc.tiny_models(args.models)
    res: dict[str, Any] = {"machine": bc.machine(), "load_average_at_start": os.getloadavg()[0]}
    print(f"{res['machine']}; {WORKERS} workers, lease {args.lease:g} s (heartbeat every {args.lease / 3:g} s)",
          flush=True)
    tmp = tempfile.mkdtemp(prefix="capstore-workers-")
    for db in (["sqlite", "postgresql"] if args.db == "both" else [args.db]):
        if db == "sqlite":
            res[db] = measure(str(Path(tmp) / "workers.db"), models, pool, prompt, args.lease)
        elif bc.pg_reachable(args.pg_url):
            with bc.pg_schema(args.pg_url) as url:
                res[db] = measure(url, models, pool, prompt, args.lease)
        else:
            print(f"PostgreSQL not reachable at {args.pg_url}: skipped")
            continue
        r = res[db]
        print(f"{db}: pool of {r['pool_unique_texts']:,} texts needed by {r['workers_needing_pool']} workers, encoded by "
              f"{r['workers_encoding_pool']} ({r['pool_embeddings_computed']:,} embeddings computed, "
              f"{r['encode_wall_s']:.1f} s); SIGKILL of a worker holding {r['items_held_by_killed_worker']} items: "
              f"taken over after {r['takeover_s']:.1f} s; run {r['run_status']} "
              f"({r['items_done']}/24 items) in {r['run_wall_s']:.1f} s", flush=True)
    bc.write_json(args.json, res)


if __name__ == "__main__":
    main()
