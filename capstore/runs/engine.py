"""The worker loop: claim a batch, run the method's steps, repeat; then settle the run's status.

``capstore run`` creates a run and calls ``work``; ``capstore resume`` and ``capstore worker`` call
``work`` on an existing run (resume first frees the leases of this host's dead processes). A
Ctrl-C gives the held items back and marks the run interrupted; a SIGKILL leaves leases that
expire (or that resume frees at once on the same host). Committed steps are never redone.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from sqlalchemy import func, select, update
from tqdm import tqdm

from capstore.backends.loading_bars import silence_loading_bars
from capstore.backends.registry import load_backend
from capstore.errors import CapstoreError
from capstore.runs.baseline_worker import BaselineWorker
from capstore.runs.config import RunConfig
from capstore.runs.create import load_run
from capstore.runs.leases import claim, free_dead_leases, new_worker_id, release
from capstore.runs.mils_worker import ItemState, MilsWorker
from capstore.runs.steps import fail_item, record_error
from capstore.store.engine import Store
from capstore.store.images import decode_image, read_image
from capstore.store.schema import Item, Run, UsageEvent, WorkItem, utcnow


@dataclass
class WorkSummary:
    run_id: int
    status: str
    items_total: int
    items_done: int
    items_failed: int
    steps: int  # (item, iteration) steps committed by this call
    model_calls: int  # over the whole run
    cached_requests: int
    interrupted: bool = False

    def describe(self) -> str:
        calls = ("made 0 model calls: everything came from the caches" if self.model_calls == 0
                 else f"{self.model_calls} model calls, {self.cached_requests} requests served from caches")
        failed = f", {self.items_failed} failed" if self.items_failed else ""
        return (f"run {self.run_id}: {self.status}; {self.items_done}/{self.items_total} items done{failed}; "
                f"{self.steps} steps committed now; {calls}")


class Backends:
    """The run's backends, built on first use and kept for the process's lifetime."""

    def __init__(self, store: Store, cfg: RunConfig) -> None:
        self.store, self.cfg = store, cfg
        self.opts = {"device": cfg.device, "dtype": cfg.dtype}

    @cached_property
    def _scorer(self):  # type: ignore[no-untyped-def]
        return load_backend("scorer", self.cfg.scorer, self.store, **self.opts)  # type: ignore[arg-type]

    @cached_property
    def _generator(self):  # type: ignore[no-untyped-def]
        extra = {"base_url": self.cfg.base_url} if self.cfg.base_url else {}
        return load_backend("generator", self.cfg.generator, self.store, **self.opts,  # type: ignore[arg-type]
                            **self.cfg.generator_params, **extra)

    @cached_property
    def _captioner(self):  # type: ignore[no-untyped-def]
        extra = {"base_url": self.cfg.base_url} if self.cfg.base_url else {}
        return load_backend("captioner", self.cfg.captioner, self.store, **self.opts,  # type: ignore[arg-type]
                            num_candidates=self.cfg.num_candidates, **self.cfg.captioner_params, **extra)

    def scorer(self):  # type: ignore[no-untyped-def]
        return self._scorer

    def generator(self):  # type: ignore[no-untyped-def]
        return self._generator

    def captioner(self):  # type: ignore[no-untyped-def]
        return self._captioner


def work(store: Store, run_id: int, worker: str | None = None, progress: bool = True,
         backends: Backends | None = None, resume: bool = False) -> WorkSummary:
    """Work on run ``run_id`` until nothing is left to claim; returns what was done."""
    worker = worker or new_worker_id()
    with store.write() as s:
        run = load_run(s, run_id)
        if run.status == "external":
            raise CapstoreError(f"run {run_id} holds imported results; there is nothing to run")
        cfg = RunConfig.from_json(run.config)
        run.status, run.started_at = "running", run.started_at or utcnow()
    if resume:
        free_dead_leases(store, run_id)
    if not progress:
        silence_loading_bars()
    backends = backends or Backends(store, cfg)
    total_steps = _remaining_steps(store, run_id, cfg)
    bar = tqdm(total=total_steps, desc=f"run {run_id} ({cfg.method})", unit="step", disable=not progress)
    counter = {"steps": 0}

    def on_step(_final: bool) -> None:
        counter["steps"] += 1
        bar.update(1)

    method = (MilsWorker if cfg.method == "mils" else BaselineWorker)(store, run_id, cfg, worker, backends, on_step)
    held: list[int] = []
    interrupted = False
    try:
        while batch := claim(store, run_id, worker, cfg.batch_images, cfg.lease_seconds):
            held = [wid for wid, _, _ in batch]
            states = _load_items(store, run_id, worker, batch)
            if states:
                method.process(states, _attempts(store, held))
            release(store, worker, held)  # anything not finished (e.g. a failed generation) goes back
            held = []
    except KeyboardInterrupt:
        interrupted = True
        release(store, worker, held)
    except Exception:
        # A backend that cannot load (models load on first use) or a call that breaks: give the
        # items back at once and leave the run resumable, then report the error.
        release(store, worker, held)
        _settle(store, run_id, counter["steps"], interrupted=True)
        raise
    finally:
        bar.close()
    return _settle(store, run_id, counter["steps"], interrupted)


def _load_items(store: Store, run_id: int, worker: str, batch: list[tuple[int, int, int]]) -> list[ItemState]:
    """Read and check each claimed item's image; an unusable one fails its item only."""
    states = []
    with store.read() as s:
        shas = dict(s.execute(select(Item.id, Item.image_sha).where(Item.id.in_([b[1] for b in batch]))).all())
    for work_id, item_id, done in batch:
        sha = shas.get(item_id)
        try:
            if sha is None:
                raise CapstoreError(f"item {item_id} has no image (imported with --allow-missing-images)")
            with store.read() as s:
                ref = read_image(s, sha)
            decode_image(ref)
        except CapstoreError as exc:
            record_error(store, run_id, item_id, "load_image", "corrupt_image" if sha else "missing_image", str(exc))
            fail_item(store, work_id, worker, final=True)
            continue
        states.append(ItemState(work_id=work_id, item_id=item_id, image=ref, done=done))
    return states


def _attempts(store: Store, work_ids: list[int]) -> dict[int, int]:
    with store.read() as s:
        return dict(s.execute(select(WorkItem.id, WorkItem.attempts).where(WorkItem.id.in_(work_ids))).all())


def _remaining_steps(store: Store, run_id: int, cfg: RunConfig) -> int:
    per_item = cfg.iterations + 1 if cfg.method == "mils" else 1
    with store.read() as s:
        rows = s.execute(select(WorkItem.iterations_done).where(
            WorkItem.run_id == run_id, WorkItem.status.in_(("pending", "leased")))).scalars().all()
    return sum(per_item - (done + 1) for done in rows) if cfg.method == "mils" else len(rows)


def _settle(store: Store, run_id: int, steps: int, interrupted: bool) -> WorkSummary:
    """Set the run's status from its work items and sum its usage."""
    with store.write() as s:
        counts = dict(s.execute(select(WorkItem.status, func.count()).where(WorkItem.run_id == run_id)
                                .group_by(WorkItem.status)).all())
        total = sum(counts.values())
        open_items = counts.get("pending", 0) + counts.get("leased", 0)
        if interrupted:
            status = "interrupted"
        elif open_items:
            status = "running"  # other workers still hold items
        else:
            status = "failed" if counts.get("failed", 0) == total else "done"
        values: dict[str, object] = {"status": status}
        if status in ("done", "failed"):
            values["finished_at"] = utcnow()
        s.execute(update(Run).where(Run.id == run_id).values(**values))
        calls, cached = s.execute(select(func.coalesce(func.sum(UsageEvent.calls), 0),
                                         func.coalesce(func.sum(UsageEvent.cached), 0))
                                  .where(UsageEvent.run_id == run_id)).one()
    return WorkSummary(run_id, status, total, counts.get("done", 0), counts.get("failed", 0), steps,
                       int(calls), int(cached), interrupted)
