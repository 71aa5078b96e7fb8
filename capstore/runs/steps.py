"""Committing one (item, iteration) step: everything it produced, in ONE transaction.

Write order inside the transaction: (1) the work item advances from ``iteration - 1`` to
``iteration`` only if this worker still holds its lease (else LeaseLost, nothing written); (2) the
texts; (3) the new candidates with their scores and ranks; (4) the iteration state (kept set as
[text sha, score] pairs, best first); (5) on the last step, the final caption. The primary/unique
keys of (2)-(5) make completing an item twice impossible even if two workers raced.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from statistics import fmean

from sqlalchemy import update

from capstore.store.content import put_texts, sha256_text
from capstore.store.engine import Store
from capstore.store.schema import Candidate, Caption, ErrorEvent, IterationState, WorkItem, utcnow


class LeaseLost(Exception):
    """Another worker took the item (our lease expired) or already committed this step."""


@dataclass
class Step:
    work_id: int
    item_id: int
    iteration: int
    new: list[tuple[str, str, float | None]]  # (text, origin, score) produced at this iteration
    kept: list[tuple[str, float]]  # kept set after this iteration, best first
    final: bool = False
    stopped_early: bool = False
    caption: tuple[str, float | None, int] | None = None  # (text, score, iteration found), when final


def commit_step(store: Store, run_id: int, worker: str, step: Step, lease_seconds: int) -> None:
    """Write ``step`` atomically; raises LeaseLost if this worker no longer owns the item."""
    now = utcnow()
    with store.write() as s:
        values: dict[str, object] = {"iterations_done": step.iteration, "updated_at": now,
                                     "lease_expires_at": now + timedelta(seconds=lease_seconds)}
        if step.stopped_early:
            values["stopped_early_at"] = step.iteration
        if step.final:
            values.update(status="done", lease_owner=None, lease_expires_at=None)
        moved = s.execute(update(WorkItem).where(
            WorkItem.id == step.work_id, WorkItem.lease_owner == worker, WorkItem.status == "leased",
            WorkItem.iterations_done == step.iteration - 1).values(**values))
        if moved.rowcount != 1:
            raise LeaseLost(f"item {step.item_id} iteration {step.iteration}")
        texts = [t for t, _, _ in step.new] + [t for t, _ in step.kept]
        if step.caption:
            texts.append(step.caption[0])
        put_texts(s, texts)
        order = sorted(range(len(step.new)), key=lambda i: -(step.new[i][2] if step.new[i][2] is not None else -1e9))
        ranks = {i: r + 1 for r, i in enumerate(order)}
        s.add_all(Candidate(run_id=run_id, item_id=step.item_id, iteration=step.iteration, text_sha=sha256_text(t),
                            origin=origin, score=score, rank=ranks[i])
                  for i, (t, origin, score) in enumerate(step.new))
        best = step.kept[0] if step.kept else None
        s.add(IterationState(run_id=run_id, item_id=step.item_id, iteration=step.iteration,
                             best_text_sha=sha256_text(best[0]) if best else None, best_score=best[1] if best else None,
                             mean_kept_score=fmean(sc for _, sc in step.kept) if step.kept else None,
                             n_new=len(step.new), kept=[[sha256_text(t), sc] for t, sc in step.kept]))
        if step.caption:
            text, score, found = step.caption
            s.add(Caption(run_id=run_id, item_id=step.item_id, text_sha=sha256_text(text), score=score, iteration=found))


def record_error(store: Store, run_id: int, item_id: int | None, stage: str, kind: str, message: str,
                 attempt: int = 1) -> None:
    """An error row (its own transaction: it must survive the step's rollback)."""
    with store.write() as s:
        s.add(ErrorEvent(run_id=run_id, item_id=item_id, stage=stage, kind=kind,
                         message=message.splitlines()[0][:2000] if message else kind, attempt=attempt))


def fail_item(store: Store, work_id: int, worker: str, final: bool) -> None:
    """After an error: give the item back for a retry, or mark it failed for good."""
    with store.write() as s:
        s.execute(update(WorkItem).where(WorkItem.id == work_id, WorkItem.lease_owner == worker).values(
            status="failed" if final else "pending", lease_owner=None, lease_expires_at=None, updated_at=utcnow()))
