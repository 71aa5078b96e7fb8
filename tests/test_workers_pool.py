"""The MILS pool is encoded once per store, even when three workers reach it at the same moment."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from sqlalchemy import select

from capstore.datasets import make_demo
from capstore.methods.demo_assets import write_demo_assets
from capstore.runs import RunConfig, create_run
from capstore.runs.engine import Backends, work
from capstore.store import Store, open_store
from capstore.store.locks import store_lock
from capstore.store.schema import Run, TextSet, UsageEvent, WorkItem

WORKERS = 3


def test_three_workers_starting_together_encode_the_pool_once(store: Store, tiny_models, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Each worker claims a batch, all three meet at a barrier in their first scorer call, then all
    need the pool at once; text batches take 0.3 s longer than they should, so without the lock all
    three would find the cache empty and encode the pool (the spy would count 3 × 2 batches)."""
    make_demo(store)
    pool, prompt = write_demo_assets(tmp_path / "assets")
    cfg = RunConfig(method="mils", dataset="demo", scorer=tiny_models.specs["scorer"], generator="fake:mutate",
                    iterations=0, keep=5, requested=8, batch_images=4, limit=4 * WORKERS, device="cpu")
    run_id = create_run(store, cfg, pool_file=str(pool), prompt_file=str(prompt))
    together = threading.Barrier(WORKERS)
    text_batches: list[int] = []

    class Spied(Backends):
        def scorer(self):  # type: ignore[no-untyped-def]
            scorer = super().scorer()
            if not getattr(scorer, "spied", False):
                scorer.spied = True
                encode_text, encode_images = scorer._encode_text_batch, scorer.encode_images

                def slow_text_batch(texts):  # type: ignore[no-untyped-def]
                    text_batches.append(len(texts))
                    time.sleep(0.3)
                    return encode_text(texts)

                def meet_first(images, ctx):  # type: ignore[no-untyped-def]
                    scorer.encode_images = encode_images
                    together.wait(timeout=120)
                    return encode_images(images, ctx)

                scorer._encode_text_batch, scorer.encode_images = slow_text_batch, meet_first
            return scorer

    stores = [open_store(store.url) for _ in range(WORKERS)]
    errors: list[BaseException] = []

    def one(worker_store: Store) -> None:
        try:
            work(worker_store, run_id, progress=False, backends=Spied(worker_store, cfg))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors
    with store.read() as s:
        pool_size = s.scalar(select(TextSet.size).where(TextSet.sha256 == s.get(Run, run_id).config["pool_sha"]))
        events = s.execute(select(UsageEvent.worker, UsageEvent.items, UsageEvent.cached, UsageEvent.calls)
                           .where(UsageEvent.stage == "encode_pool")).all()
        assert s.scalars(select(WorkItem.status).distinct()).all() == ["done"]
    assert len({e.worker for e in events}) == WORKERS, "every worker needed the pool"
    assert sum(e.items - e.cached for e in events) == pool_size  # embeddings computed, over all workers
    assert [e.calls > 0 for e in events].count(True) == 1  # one worker encoded; the others read the cache
    assert sum(text_batches) == pool_size
    for s in stores:
        s.dispose()


def test_store_lock_excludes_and_is_freed_when_its_holder_dies(store: Store, tmp_path: Path) -> None:
    """A second holder waits; a holder killed while holding (a process SIGKILLed) blocks no one."""
    import os
    import signal
    import subprocess
    import sys

    order: list[str] = []
    held = threading.Event()

    def first() -> None:
        with store_lock(store, "encode-pool:test"):
            held.set()
            time.sleep(0.3)
            order.append("first done")

    t = threading.Thread(target=first)
    t.start()
    held.wait(10)
    with store_lock(store, "encode-pool:test"):
        order.append("second in")
    t.join()
    assert order == ["first done", "second in"]

    code = ("import sys, time; from capstore.store import open_store; from capstore.store.locks import store_lock\n"
            "with store_lock(open_store(sys.argv[1]), 'encode-pool:test'):\n"
            "    print('held', flush=True); time.sleep(600)")
    holder = subprocess.Popen([sys.executable, "-c", code, store.url], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"  # type: ignore[union-attr]
        waited = threading.Event()

        def second() -> None:
            with store_lock(store, "encode-pool:test"):
                waited.set()

        t = threading.Thread(target=second, daemon=True)
        t.start()
        assert not waited.wait(0.5), "the lock was not held"
        os.kill(holder.pid, signal.SIGKILL)
        assert waited.wait(10), "a dead holder still blocks the lock"
    finally:
        holder.kill()
        holder.wait()
