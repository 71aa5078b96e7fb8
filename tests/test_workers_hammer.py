"""Concurrent writers never crash: 4 worker processes × 4 runs commit overlapping new texts at once.

Each worker claims batches of every run in the same order, so all four commit steps of the same
run and iteration at the same moment; each step's candidates are drawn (in a random order) from the
same 200 new texts of that run and iteration, and each batch's embeddings are cached with
overlapping keys, while a heartbeat renews the worker's leases every 20 ms. Inserted in their own
orders, those texts deadlock PostgreSQL within a few commits (the OperationalError once seen in
``test_workers_on_postgresql_do_every_item_once[3]``); in one (sha) order they cannot, and the test
also requires that no transaction had to be re-run: lock order, not retries, keeps them apart.
"""

from __future__ import annotations

import multiprocessing
import random
import threading

import numpy as np
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import OperationalError

from capstore.store import open_store
from capstore.store.content import put_texts
from capstore.store.schema import (Candidate, Caption, Dataset, EmbeddingCache, IterationState, Item, Model, Run,
                                   Split, WorkItem, utcnow)

RUNS, ITEMS, WORKERS, BATCH, NEW = 4, 32, 4, 4, 30


def _setup(url: str) -> tuple[list[int], int]:
    store = open_store(url)
    with store.write() as s:
        ds = Dataset(name="hammer")
        s.add(ds)
        s.flush()
        split = Split(dataset_id=ds.id, name="test")
        model = Model(fingerprint="h" * 64, kind="scorer", backend="fake", name="hammer", config={})
        s.add_all([split, model])
        s.flush()
        items = [Item(split_id=split.id, external_id=f"{i:02d}") for i in range(ITEMS)]
        s.add_all(items)
        s.flush()
        runs = [Run(method="mils", config={"method": "mils", "dataset": "hammer", "iterations": 1}, config_hash="0" * 64,
                    split_id=split.id, status="running") for _ in range(RUNS)]
        s.add_all(runs)
        s.flush()
        s.add_all(WorkItem(run_id=r.id, item_id=it.id, status="pending", iterations_done=-1, updated_at=utcnow())
                  for r in runs for it in items)
        run_ids, model_id = [r.id for r in runs], model.id
    store.dispose()
    return run_ids, model_id


def _worker(url: str, run_ids: list[int], model_id: int, seed: int, start, results) -> None:  # type: ignore[no-untyped-def]
    """One worker: every run in turn, batch after batch, two iterations per batch (the last final)."""
    from capstore.backends.caching import put_embeddings
    from capstore.runs.heartbeat import Heartbeat
    from capstore.runs.leases import claim, new_worker_id
    from capstore.runs.steps import Step, commit_steps
    from capstore.store import retry
    from capstore.store.content import sha256_text

    rng = random.Random(seed)
    store, worker = open_store(url), new_worker_id()
    lost = 0
    try:
        start.wait(timeout=120)  # all four begin together, so their commits meet
        for run_id in run_ids:
            with Heartbeat(store, run_id, worker, lease_seconds=30, interval=0.02):
                while batch := claim(store, run_id, worker, BATCH, 30):
                    for iteration in (0, 1):
                        words = [f"run {run_id} iteration {iteration} text {k}" for k in range(200)]
                        steps = []
                        for work_id, item_id, _ in batch:
                            new = [(t, "generated", rng.random()) for t in rng.sample(words, NEW)]
                            kept = sorted(((t, sc) for t, _, sc in new), key=lambda p: -p[1])[:5]
                            steps.append(Step(work_id, item_id, iteration, new, kept, final=iteration == 1,
                                              caption=(kept[0][0], kept[0][1], iteration) if iteration == 1 else None))
                        texts = [t for st in steps for t, _, _ in st.new]
                        rng.shuffle(texts)
                        put_embeddings(store, model_id, "text", [sha256_text(t) for t in texts],
                                       np.ones((len(texts), 4), dtype=np.float32))
                        lost += len(commit_steps(store, run_id, worker, steps, 30))
        results.put((seed, "ok", lost, retry.retried))
    except Exception as exc:
        results.put((seed, f"{type(exc).__name__}: {str(exc).splitlines()[0]}", lost, retry.retried))
    finally:
        store.dispose()


@pytest.mark.parametrize("db_kind", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_four_workers_commit_overlapping_texts_of_four_runs_without_a_crash(db_kind: str, tmp_path, request) -> None:  # type: ignore[no-untyped-def]
    url = str(tmp_path / "store.db") if db_kind == "sqlite" else request.getfixturevalue("pg_url")
    run_ids, model_id = _setup(url)
    ctx = multiprocessing.get_context("spawn")
    results, start = ctx.Queue(), ctx.Barrier(WORKERS)
    procs = [ctx.Process(target=_worker, args=(url, run_ids, model_id, seed, start, results)) for seed in range(WORKERS)]
    for p in procs:
        p.start()
    outcomes = sorted(results.get(timeout=240) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    assert [o[1] for o in outcomes] == ["ok"] * WORKERS, outcomes
    assert sum(o[2] for o in outcomes) == 0, "a step was lost though no lease expired"
    assert [o[3] for o in outcomes] == [0] * WORKERS, "transactions had to be re-run: a lock-order cycle is back"
    store = open_store(url)
    with store.read() as s:
        assert s.scalars(select(WorkItem.status).distinct()).all() == ["done"]
        assert s.scalar(select(func.count()).select_from(Caption)) == RUNS * ITEMS
        assert s.scalar(select(func.count()).select_from(IterationState)) == RUNS * ITEMS * 2
        assert s.scalar(select(func.count()).select_from(Candidate)) == RUNS * ITEMS * 2 * NEW
        assert s.scalar(select(func.count()).select_from(EmbeddingCache)) == s.scalar(
            text("SELECT count(*) FROM texts"))
    store.dispose()


def test_a_real_deadlock_is_run_again_whole(pg_url: str) -> None:
    """Two transactions insert the same two texts in opposite orders and meet: PostgreSQL aborts one
    (deadlock detected); ``Store.transact`` runs that one again and both end committed."""
    from capstore.store import retry

    store = open_store(pg_url)
    meet = threading.Barrier(2)
    attempts = {"ab": 0, "ba": 0}
    errors: list[BaseException] = []

    def unit_for(order: str):  # type: ignore[no-untyped-def]
        def unit(s):  # type: ignore[no-untyped-def]
            attempts[order] += 1
            first, second = (["text a", "text b"] if order == "ab" else ["text b", "text a"])
            put_texts(s, [first])
            if attempts[order] == 1:
                meet.wait(timeout=10)  # both hold their first text: the second inserts wait on each other
            put_texts(s, [second])
        return unit

    def run(order: str) -> None:
        try:
            store.transact(unit_for(order))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    before = retry.retried
    threads = [threading.Thread(target=run, args=(order,)) for order in ("ab", "ba")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    assert sorted(attempts.values()) == [1, 2] and retry.retried == before + 1
    with store.read() as s:
        assert s.scalar(text("SELECT count(*) FROM texts")) == 2
    store.dispose()


def test_only_transient_errors_are_retried() -> None:
    import sqlite3

    import psycopg.errors

    from capstore.store.retry import is_transient, retry_transient

    def wrapped(orig: BaseException) -> OperationalError:
        return OperationalError("INSERT …", {}, orig)

    assert is_transient(wrapped(sqlite3.OperationalError("database is locked")))
    assert is_transient(wrapped(psycopg.errors.DeadlockDetected("deadlock detected")))
    assert is_transient(wrapped(psycopg.errors.SerializationFailure("could not serialize access")))
    assert not is_transient(wrapped(sqlite3.OperationalError("no such table: texts")))
    assert not is_transient(wrapped(psycopg.errors.UndefinedTable("relation does not exist")))
    calls = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise wrapped(sqlite3.OperationalError("database is locked"))
        return "done"

    assert retry_transient(flaky) == "done" and len(calls) == 3
    calls.clear()

    def broken() -> None:
        calls.append(1)
        raise wrapped(sqlite3.OperationalError("no such table: texts"))

    with pytest.raises(OperationalError, match="no such table"):
        retry_transient(broken)
    assert len(calls) == 1  # a real error is not retried
