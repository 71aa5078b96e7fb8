"""A small store with known numbers for the viewer's tests, written the way capstore's writers write.

Six demo items (real PNG images kept in the store), a MILS-shaped run (iterations 0-2: four pool
candidates, then three generated candidates an iteration, kept sets, captions) and a baseline run
(one caption per item; one item failed with an error row), item-scope CIDEr and CLIPScore chosen so
that the baseline's delta over MILS is different for every item, corpus metrics and priced usage.
``add_iteration`` commits one more MILS iteration, as a worker does, for the tests that read while
a run works.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import select, update

from capstore.datasets import make_demo
from capstore.runs.config import RunConfig
from capstore.runs.steps import CANDIDATE_COLUMNS, CAPTION_COLUMNS, STATE_COLUMNS
from capstore.store import Store
from capstore.store.bulk import insert_rows
from capstore.store.content import put_texts, sha256_text
from capstore.store.schema import (Candidate, Caption, ErrorEvent, Item, IterationState, MetricValue, Run, UsageEvent,
                                   WorkItem, utcnow)

IMPL = "serve-test-1"
ITEMS = 6
ITERATIONS = 3  # 0 (the pool's top) .. 2
KEEP = 3


@dataclass
class ServeStore:
    store: Store
    db: str
    items: list[int]  # item ids, in item order
    shas: dict[int, str]  # item id -> image sha
    mils: int
    baseline: int
    failed_item: int  # the baseline's failed item (no caption, an error row)
    captions: dict[int, dict[int, str]] = field(default_factory=dict)  # run -> item -> caption
    caption_iteration: dict[int, int] = field(default_factory=dict)  # MILS item -> iteration its caption entered
    cider: dict[int, dict[int, float]] = field(default_factory=dict)  # run -> item -> item-scope CIDEr


def mils_text(item: int, iteration: int, j: int) -> str:
    return f"cand {j} of item {item} at iteration {iteration}"


def mils_score(item: int, iteration: int, j: int) -> float:
    """Iteration 0 is the pool; items with an even index find their best at iteration 1, the others keep
    a pool line (so the caption's first iteration differs by item)."""
    base = 0.30 + 0.01 * j
    if iteration == 1 and item % 2 == 0:
        return base + 0.20
    return base + 0.02 * iteration if iteration else base + 0.1


def build_serve_store(store: Store, db: str) -> ServeStore:
    make_demo(store)
    with store.read() as s:
        rows = s.execute(select(Item.id, Item.image_sha).order_by(Item.external_id).limit(ITEMS)).all()
        split = s.scalar(select(Item.split_id).where(Item.id == rows[0][0]))
    items = [r[0] for r in rows]
    fixture = ServeStore(store, db, items, {r[0]: r[1] for r in rows}, 0, 0, items[-1])
    fixture.mils = _new_run(store, split, RunConfig(
        method="mils", dataset="demo", split="test", label="serve-mils", scorer="open_clip:tiny",
        generator="hf:tiny", pool_name="serve-pool", iterations=ITERATIONS - 1, keep=KEEP, requested=3))
    fixture.baseline = _new_run(store, split, RunConfig(method="blip2", dataset="demo", split="test",
                                                        label="serve-blip2", captioner="blip2:tiny"))
    _work(store, fixture.mils, items)
    for it in range(ITERATIONS):
        add_iteration(store, fixture.mils, items, it)
    fixture.captions[fixture.mils] = _finish_mils(store, fixture)
    fixture.captions[fixture.baseline] = _baseline(store, fixture)
    _metrics_and_usage(store, fixture)
    return fixture


def _new_run(store: Store, split: int, cfg: RunConfig) -> int:
    now = utcnow()
    with store.write() as s:
        run = Run(method=cfg.method, label=cfg.label, config=cfg.to_json(), config_hash=cfg.hash(), split_id=split,
                  status="running", seed=0, created_at=now, started_at=now)
        s.add(run)
        s.flush()
        return run.id


def _work(store: Store, run_id: int, items: list[int]) -> None:
    with store.write() as s:
        s.execute(WorkItem.__table__.insert(), [{"run_id": run_id, "item_id": i, "status": "leased", "attempts": 1,
                                                 "lease_owner": "test:1:serve", "iterations_done": -1,
                                                 "updated_at": utcnow()} for i in items])


def add_iteration(store: Store, run_id: int, items: list[int], it: int) -> None:
    """One MILS iteration of every item, committed in one bulk transaction as ``commit_steps`` does."""
    now = utcnow()
    with store.read() as s:
        prev = {r.item_id: r.kept for r in s.scalars(select(IterationState).where(
            IterationState.run_id == run_id, IterationState.iteration == it - 1))}
    with store.write(bulk=True) as s:
        cands, states = [], []
        for i in items:
            n = 4 if it == 0 else 3
            texts = [mils_text(i, it, j) for j in range(n)]
            shas = put_texts(s, texts)
            scored = sorted(((mils_score(i, it, j), sha) for j, sha in enumerate(shas)), reverse=True)
            cands += [(run_id, i, it, sha, "pool" if it == 0 else "generated", score, rank + 1)
                      for rank, (score, sha) in enumerate(scored)]
            pool = {sha: score for sha, score in (prev.get(i) or [])}
            pool.update({sha: score for score, sha in scored})
            kept = sorted(pool.items(), key=lambda kv: (-kv[1], kv[0]))[:KEEP]
            states.append((run_id, i, it, kept[0][0], kept[0][1], sum(v for _, v in kept) / len(kept), n,
                           [[sha, score] for sha, score in kept], now))
        insert_rows(s, Candidate.__table__,
                    CANDIDATE_COLUMNS, cands)
        insert_rows(s, IterationState.__table__,
                    STATE_COLUMNS, states)
        s.execute(update(WorkItem).where(WorkItem.run_id == run_id).values(iterations_done=it, updated_at=now))
        s.add(UsageEvent(run_id=run_id, stage="generate", device_type="cuda", device_name="NVIDIA A10G",
                         device_seconds=600.0, wall_seconds=610.0, items=len(items), calls=1, cached=0))


def _finish_mils(store: Store, f: ServeStore) -> dict[int, str]:
    now = utcnow()
    captions: dict[int, str] = {}
    with store.write() as s:
        last = {r.item_id: r for r in s.scalars(select(IterationState).where(
            IterationState.run_id == f.mils, IterationState.iteration == ITERATIONS - 1))}
        rows = []
        for i in f.items:
            best_sha = last[i].best_text_sha
            j_it = next((it, j) for it in range(ITERATIONS) for j in range(4)
                        if sha256_text(mils_text(i, it, j)) == best_sha)
            f.caption_iteration[i] = j_it[0]
            captions[i] = mils_text(i, *j_it)
            rows.append(dict(zip(CAPTION_COLUMNS, (f.mils, i, best_sha, last[i].best_score, j_it[0], now))))
        s.execute(Caption.__table__.insert(), rows)
        s.execute(update(WorkItem).where(WorkItem.run_id == f.mils).values(status="done", lease_owner=None))
        s.execute(update(Run).where(Run.id == f.mils).values(status="done", finished_at=now))
    return captions


def _baseline(store: Store, f: ServeStore) -> dict[int, str]:
    now = utcnow()
    captions = {i: f"a baseline caption of item {i}" for i in f.items if i != f.failed_item}
    with store.write() as s:
        shas = dict(zip(captions, put_texts(s, list(captions.values()))))
        s.execute(WorkItem.__table__.insert(), [
            {"run_id": f.baseline, "item_id": i, "status": "failed" if i == f.failed_item else "done",
             "attempts": 3 if i == f.failed_item else 1, "iterations_done": -1 if i == f.failed_item else 0,
             "updated_at": now} for i in f.items])
        s.execute(Candidate.__table__.insert(), [
            {"run_id": f.baseline, "item_id": i, "iteration": 0, "text_sha": sha, "origin": "baseline",
             "score": None, "rank": 1} for i, sha in shas.items()])
        s.execute(Caption.__table__.insert(), [dict(zip(CAPTION_COLUMNS, (f.baseline, i, sha, None, 0, now)))
                                               for i, sha in shas.items()])
        s.add(ErrorEvent(run_id=f.baseline, item_id=f.failed_item, stage="caption", kind="http_500",
                         message="http_500: the upstream server said no", attempt=3))
        s.execute(update(Run).where(Run.id == f.baseline).values(status="failed", finished_at=now))
    return captions


def _metrics_and_usage(store: Store, f: ServeStore) -> None:
    rows = []
    for k, run_id in enumerate((f.mils, f.baseline)):
        for metric, value in (("CIDEr", 0.9 - 0.4 * k), ("Bleu_4", 0.3 - 0.1 * k), ("CLIPScore", 0.7)):
            rows.append(MetricValue(run_id=run_id, metric=metric, scope="corpus", subject="corpus", value=value,
                                    implementation=IMPL))
        f.cider[run_id] = {}
        for n, item in enumerate(f.items):
            if item in f.captions[run_id]:
                # MILS: 0.5 + 0.1 n; the baseline: 0.9 - 0.05 n² → deltas +0.4, +0.25, 0, -0.35, -0.8 (distinct)
                value = 0.5 + 0.1 * n if run_id == f.mils else 0.9 - 0.05 * n * n
                f.cider[run_id][item] = value
                rows.append(MetricValue(run_id=run_id, metric="CIDEr", scope="item", subject=f"item:{item}",
                                        item_id=item, value=value, implementation=IMPL))
                rows.append(MetricValue(run_id=run_id, metric="CLIPScore", scope="item", subject=f"item:{item}",
                                        item_id=item, value=0.6 + 0.01 * n, implementation=IMPL))
    with store.write() as s:
        s.add_all(rows)
        s.add(UsageEvent(run_id=f.baseline, stage="caption", device_type="cuda", device_name="NVIDIA A10G",
                         device_seconds=60.0, wall_seconds=61.0, images=ITEMS, items=ITEMS, calls=1, cached=0))
