"""The worker loop: claim a batch, run the method's steps, repeat; then settle the run's status.

``capstore run`` creates a run and calls ``work``; ``capstore resume`` and ``capstore worker`` call
``work`` on an existing run (resume first frees the leases of this host's dead processes). While
it works, a heartbeat thread renews the worker's short leases; when nothing is left to claim but
other workers still hold items, ``work`` waits (``wait=True``) until they finish them or their
leases run out (a dead worker's items are then taken over). A Ctrl-C gives the held items back; a
SIGKILL leaves leases that expire within one lease (or that resume frees at once on the same host).
Committed steps are never redone.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from functools import cached_property

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session
from tqdm import tqdm

from capstore.backends.loading_bars import silence_loading_bars
from capstore.backends.registry import load_backend
from capstore.errors import CapstoreError
from capstore.methods.modalities import load_media
from capstore.methods.registry import method_spec, worker_class
from capstore.runs.config import RunConfig
from capstore.runs.create import load_run
from capstore.runs.heartbeat import Heartbeat
from capstore.runs.interrupts import CtrlC
from capstore.runs.leases import (claim, free_dead_leases, lease_seconds, new_worker_id, open_work, release,
                                  release_all, store_now)
from capstore.runs.mils_worker import ItemState
from capstore.runs.steps import fail_item, record_error
from capstore.store.engine import Store
from capstore.store.schema import ErrorEvent, Image, Item, Run, UsageEvent, WorkItem

MAX_WAIT_POLL_S = 5.0  # how often a waiting worker looks at the store at most


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
    first_error: str | None = None  # "item X, stage: kind: message" of the first failed item's first error
    held_by_others: int = 0  # items still leased by other live workers (status "running")

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

    @cached_property
    def _scorer(self):  # type: ignore[no-untyped-def]
        return load_backend("scorer", self.cfg.scorer, self.store, **self.cfg.backend_options("scorer"))  # type: ignore[arg-type]

    @cached_property
    def _generator(self):  # type: ignore[no-untyped-def]
        extra = {"base_url": self.cfg.base_url} if self.cfg.base_url else {}
        return load_backend("generator", self.cfg.generator, self.store, **self.cfg.backend_options("generator"),  # type: ignore[arg-type]
                            **self.cfg.generator_params, **extra)

    @cached_property
    def _captioner(self):  # type: ignore[no-untyped-def]
        extra = {"base_url": self.cfg.base_url} if self.cfg.base_url else {}
        return load_backend("captioner", self.cfg.captioner, self.store, **self.cfg.backend_options("captioner"),  # type: ignore[arg-type]
                            num_candidates=self.cfg.num_candidates, **self.cfg.captioner_params, **extra)

    def scorer(self):  # type: ignore[no-untyped-def]
        return self._scorer

    def generator(self):  # type: ignore[no-untyped-def]
        return self._generator

    def captioner(self):  # type: ignore[no-untyped-def]
        return self._captioner


def work(store: Store, run_id: int, worker: str | None = None, progress: bool = True,
         backends: Backends | None = None, resume: bool = False, wait: bool = True,
         lease: float | None = None, stop: threading.Event | None = None) -> WorkSummary:
    """Work on run ``run_id`` until nothing is left to claim; returns what was done.

    ``wait``: while other workers hold the run's last items, wait for them to finish (or for their
    leases to run out, then take the items over) instead of returning with the run unfinished.
    ``lease``: lease length in seconds (default ``$CAPSTORE_LEASE_SECONDS``, else the run's, 60 s).
    ``stop``: once set, return before the next claim (wakes a waiting worker; a Ray driver sets it).
    """
    worker = worker or new_worker_id()
    cfg = _start(store, run_id)
    cfg.lease_seconds = lease or lease_seconds(cfg.lease_seconds)  # what steps and claims use below
    if resume:
        free_dead_leases(store, run_id)
    if not progress:
        silence_loading_bars()
    backends = backends or Backends(store, cfg)
    total_steps = _remaining_steps(store, run_id, cfg)
    desc = f"run {run_id} ({cfg.method})"
    bar = tqdm(total=total_steps, desc=desc, unit="step", disable=not progress)
    counter = {"steps": 0}
    ctrl_c = CtrlC()

    def on_step(_final: bool) -> None:
        counter["steps"] += 1
        bar.update(1)
        ctrl_c.check()  # a Ctrl-C a finalizer swallowed stops the run here, after a committed step

    method = worker_class(cfg.method)(store, run_id, cfg, worker, backends, on_step)  # the method registry's
    interrupted = False
    try:
        with ctrl_c, Heartbeat(store, run_id, worker, cfg.lease_seconds):
            while not (stop is not None and stop.is_set()):
                ctrl_c.check()
                batch = claim(store, run_id, worker, cfg.batch_images, cfg.lease_seconds)
                if batch:
                    bar.set_description_str(desc)  # (it may have said "waiting")
                    held = [wid for wid, _, _ in batch]
                    states = _load_items(store, run_id, worker, batch)
                    if states:
                        method.process(states, _attempts(store, held))
                    release(store, worker, held)  # anything not finished (e.g. a failed generation) goes back
                    continue
                if not wait or not _wait_for_others(store, run_id, worker, cfg, bar, total_steps, stop):
                    break
    except KeyboardInterrupt:
        interrupted = True
        release_all(store, run_id, worker)
    except Exception:
        # A backend that cannot load (models load on first use) or a call that breaks: give the
        # items back at once and leave the run resumable, then report the error.
        release_all(store, run_id, worker)
        _settle(store, run_id, counter["steps"], interrupted=True)
        raise
    finally:
        bar.close()
    return _settle(store, run_id, counter["steps"], interrupted)


def _start(store: Store, run_id: int) -> RunConfig:
    """Mark the run running (when it has work left) and return its configuration."""
    def unit(s: Session) -> RunConfig:
        run = load_run(s, run_id)
        if run.status == "external":
            raise CapstoreError(f"run {run_id} holds imported results; there is nothing to run")
        open_items = s.scalar(select(func.count()).select_from(WorkItem).where(
            WorkItem.run_id == run_id, WorkItem.status.in_(("pending", "leased"))))
        if open_items:  # a finished run stays as it is: status and finished_at untouched
            run.status = "running"
            run.started_at = run.started_at or store_now(s)
        return RunConfig.from_json(run.config)

    return store.transact(unit)


def _wait_for_others(store: Store, run_id: int, worker: str, cfg: RunConfig, bar: tqdm, total_steps: int,
                     stop: threading.Event | None = None) -> bool:
    """Nothing to claim: if other workers hold items, wait a while and return True (look again);
    if the run has nothing open left, return False. The bar follows the run's progress in the store."""
    left = open_work(store, run_id, worker)
    if left.left == 0:
        return False
    if left.pending or left.expired:  # claimable (freed or expired between two looks, or being claimed)
        time.sleep(0.05)
        return True
    bar.set_description_str(f"run {run_id} ({cfg.method}): waiting for {left.held} items held by other workers")
    bar.n = max(bar.n, total_steps - _remaining_steps(store, run_id, cfg))
    bar.refresh()
    pause = min(MAX_WAIT_POLL_S, cfg.lease_seconds / 3)
    if left.next_expiry_s is not None:
        pause = min(pause, left.next_expiry_s + 0.05)
    (stop.wait if stop is not None else time.sleep)(max(0.05, pause))
    return True


def _load_items(store: Store, run_id: int, worker: str, batch: list[tuple[int, int, int]]) -> list[ItemState]:
    """Read and check each claimed item's medium (an image, video or audio clip: ``load_media``), in
    one read transaction; an unusable one fails its item only."""
    with store.read() as s:
        rows = s.execute(select(Item.id, Item.image_sha, Image.kind).outerjoin(Image, Image.sha256 == Item.image_sha)
                         .where(Item.id.in_([b[1] for b in batch]))).all()
        media = {item_id: (sha, kind or "image") for item_id, sha, kind in rows}
        found = [(item_id, media[item_id]) for _, item_id, _ in batch if media.get(item_id, (None,))[0] is not None]
        refs = dict(zip((item_id for item_id, _ in found), load_media(s, [medium for _, medium in found])))
    states = []
    for work_id, item_id, done in batch:
        sha, kind = media.get(item_id, (None, "image"))
        ref = refs.get(item_id)
        if ref is None or isinstance(ref, CapstoreError):
            message = str(ref) if ref is not None else (f"item {item_id} has no {kind} "
                                                        "(imported with --allow-missing-images)")
            record_error(store, run_id, item_id, f"load_{kind}", f"corrupt_{kind}" if sha else f"missing_{kind}",
                         message)
            fail_item(store, work_id, worker, final=True)
            continue
        states.append(ItemState(work_id=work_id, item_id=item_id, image=ref, done=done))
    return states


def _attempts(store: Store, work_ids: list[int]) -> dict[int, int]:
    with store.read() as s:
        return dict(s.execute(select(WorkItem.id, WorkItem.attempts).where(WorkItem.id.in_(work_ids))).all())


def _remaining_steps(store: Store, run_id: int, cfg: RunConfig) -> int:
    spec = method_spec(cfg.method)
    per_item = spec.steps_per_item(cfg.iterations)
    with store.read() as s:
        rows = s.execute(select(WorkItem.iterations_done).where(
            WorkItem.run_id == run_id, WorkItem.status.in_(("pending", "leased")))).scalars().all()
    return sum(per_item - (done + 1) for done in rows) if spec.iterative else len(rows)


def _settle(store: Store, run_id: int, steps: int, interrupted: bool) -> WorkSummary:
    """Set the run's status from its work items and sum its usage.

    ``finished_at`` is when the run's last item reached its end (done or failed), so settling a
    finished run again (resume, another worker, a rerun of the demo) leaves it as it was.
    An interrupted worker marks the run interrupted only if no other live worker holds items.
    """
    def unit(s: Session) -> WorkSummary:
        counts = dict(s.execute(select(WorkItem.status, func.count()).where(WorkItem.run_id == run_id)
                                .group_by(WorkItem.status)).all())
        total = sum(counts.values())
        now = store_now(s)
        held = s.scalar(select(func.count()).select_from(WorkItem).where(
            WorkItem.run_id == run_id, WorkItem.status == "leased", WorkItem.lease_expires_at >= now)) or 0
        open_items = counts.get("pending", 0) + counts.get("leased", 0)
        if not open_items:
            status = "failed" if counts.get("failed", 0) == total else "done"
        elif interrupted and not held:
            status = "interrupted"
        else:
            status = "running"  # other workers still hold items (or this one was told not to wait)
        values: dict[str, object] = {"status": status}
        if status in ("done", "failed"):
            values["finished_at"] = s.scalar(select(func.max(WorkItem.updated_at)).where(WorkItem.run_id == run_id))
        s.execute(update(Run).where(Run.id == run_id).values(**values))
        calls, cached = s.execute(select(func.coalesce(func.sum(UsageEvent.calls), 0),
                                         func.coalesce(func.sum(UsageEvent.cached), 0))
                                  .where(UsageEvent.run_id == run_id)).one()
        return WorkSummary(run_id, status, total, counts.get("done", 0), counts.get("failed", 0), steps,
                           int(calls), int(cached), interrupted, _first_error(s, run_id) if counts.get("failed") else None,
                           int(held) if status == "running" else 0)

    return store.transact(unit)


def _first_error(s: Session, run_id: int) -> str | None:
    """The first error recorded for a failed item of the run (else the run's first error)."""
    failed = select(WorkItem.item_id).where(WorkItem.run_id == run_id, WorkItem.status == "failed")
    query = (select(Item.external_id, ErrorEvent.stage, ErrorEvent.kind, ErrorEvent.message)
             .join(Item, Item.id == ErrorEvent.item_id, isouter=True).where(ErrorEvent.run_id == run_id)
             .order_by(ErrorEvent.id).limit(1))
    row = s.execute(query.where(ErrorEvent.item_id.in_(failed))).first() or s.execute(query).first()
    if row is None:
        return None
    external_id, stage, kind, message = row
    where = f"item {external_id}, " if external_id is not None else ""
    return f"{where}{stage}: {kind}: {message}"


def steps_left(store: Store, run_id: int) -> int:
    """(item, iteration) steps of ``run_id`` not committed yet: what a progress bar counts down."""
    with store.read() as s:
        cfg = RunConfig.from_json(load_run(s, run_id).config)
    return _remaining_steps(store, run_id, cfg)


def settle(store: Store, run_id: int, steps: int = 0, interrupted: bool = False) -> WorkSummary:
    """Set the run's status from its work items and return its summary, as ``work`` does at its end.

    For drivers that run ``work`` elsewhere (Ray actors): ``steps`` is what they committed.
    """
    return _settle(store, run_id, steps, interrupted)
