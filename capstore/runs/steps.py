"""Committing steps: everything a batch of (item, iteration) steps produced, in ONE transaction.

Write order inside the transaction: (1) each step's work item advances from ``iteration - 1`` to
``iteration`` only if this worker still holds its lease (else that step, and the item's later ones,
are given back as lost and nothing of them is written); (2) the texts; (3) the new candidates with
their scores and ranks; (4) the iteration states (kept set as [text sha, score] pairs, best first);
(5) on an item's last step, the final caption. The primary/unique keys of (2)-(5) make completing an
item twice impossible even if two workers raced. Rows (3)-(5) go through ``store.bulk.insert_tables``
in a bulk transaction: references are checked once per distinct text (the run and items are kept by
the locked work items that reference them).

Lock order (PostgreSQL): the batch's work items first, in id order (the statement also reads the
server's clock), then the texts in sha order (``insert_ignore``), then the texts its rows reference
and it did not insert (``FOR KEY SHARE``, in key order: ``bulk.lock_references``; such locks do not
block each other), so two workers' commits never wait on each other in a cycle. A transaction the
database still aborts (deadlock, SQLite busy) is run again whole (``Store.transact``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import groupby
from statistics import fmean
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from capstore.runs.leases import store_now
from capstore.store.bulk import held_here, insert_tables
from capstore.store.content import put_texts, sha256_text
from capstore.store.engine import Store
from capstore.store.schema import Candidate, Caption, ErrorEvent, IterationState, WorkItem, utcnow

CANDIDATE_COLUMNS = ("run_id", "item_id", "iteration", "text_sha", "origin", "score", "rank")
STATE_COLUMNS = ("run_id", "item_id", "iteration", "best_text_sha", "best_score", "mean_kept_score", "n_new", "kept",
                 "created_at")
CAPTION_COLUMNS = ("run_id", "item_id", "text_sha", "score", "iteration", "created_at")
_MAX_IDS = 30_000  # work item ids per UPDATE (bound-parameter limits)


class LeaseLost(Exception):
    """Another worker took the item (our lease expired) or already committed this step."""


@dataclass
class Step:
    work_id: int
    item_id: int
    iteration: int
    new: list[tuple[str, str, float | None]]  # (text, origin, score) produced at this iteration
    kept: list[tuple[str, float]]  # kept set after this iteration, best first: texts of ``new`` or stored ones
    final: bool = False
    stopped_early: bool = False
    caption: tuple[str, float | None, int] | None = None  # (text, score, iteration found), when final; a kept text


def commit_step(store: Store, run_id: int, worker: str, step: Step, lease_seconds: float) -> None:
    """Write one ``step`` atomically; raises LeaseLost if this worker no longer owns the item."""
    if commit_steps(store, run_id, worker, [step], lease_seconds):
        raise LeaseLost(f"item {step.item_id} iteration {step.iteration}")


def commit_steps(store: Store, run_id: int, worker: str, steps: list[Step], lease_seconds: float) -> list[Step]:
    """Write ``steps`` (an item's steps in iteration order) in one transaction; returns those lost.

    A lost step is one whose item this worker no longer holds at that iteration; it is not written,
    and the other steps are unaffected.
    """
    def unit(s: Session) -> set[tuple[int, int]]:
        now = _lock_work_items(s, run_id, steps)
        moved = _advance(s, worker, steps, now, lease_seconds)
        done = [st for st in steps if (st.work_id, st.iteration) in moved]
        # Only the new candidates' texts are written: a kept text (and so the caption) is one of them
        # or an earlier candidate of the item, already stored; asking for it again cost a key probe each.
        texts = [t for st in done for t, _, _ in st.new]
        sha = dict(zip(texts, put_texts(s, texts)))
        for text in {t for st in done for t, _ in st.kept} - sha.keys():
            sha[text] = sha256_text(text)
        insert_tables(s, [
            (Candidate.__table__, CANDIDATE_COLUMNS, [row for st in done for row in _candidate_rows(run_id, st, sha)]),
            (IterationState.__table__, STATE_COLUMNS, [_state_row(run_id, st, sha, now) for st in done]),
            (Caption.__table__, CAPTION_COLUMNS, [(run_id, st.item_id, sha[st.caption[0]], st.caption[1], st.caption[2],
                                                  now) for st in done if st.caption])])
        return moved

    moved = store.transact(unit, bulk=True)
    return [st for st in steps if (st.work_id, st.iteration) not in moved]


def _lock_work_items(s: Session, run_id: int, steps: list[Step]) -> datetime:
    """Now by the store's clock; on PostgreSQL read in the statement that locks the steps' work items
    (``FOR UPDATE``, in id order: SQLite has one writer), one round trip for both.

    The locked work items reference the steps' items and run, so neither can be deleted before this
    transaction ends (a run's deletion cascades to them and waits; an item's is refused while they
    exist): the rows written below reference them without locking them again (``bulk.held_here``).
    """
    if s.get_bind().dialect.name != "postgresql":
        return store_now(s)
    ids = sorted({st.work_id for st in steps})
    now: datetime | None = None
    for start in range(0, len(ids), _MAX_IDS):
        rows = s.execute(select(WorkItem.item_id, func.statement_timestamp()).where(
            WorkItem.id.in_(ids[start:start + _MAX_IDS])).order_by(WorkItem.id).with_for_update()).all()
        if rows:
            now = now or rows[0][1]
            held_here(s, "items").update(item_id for item_id, _ in rows)
            held_here(s, "runs").add(run_id)
    return now if now is not None else store_now(s)  # (no work item left: nothing is written)


def _advance(s: Session, worker: str, steps: list[Step], now: datetime, lease_seconds: float) -> set[tuple[int, int]]:
    """Move each step's work item to its iteration if this worker holds it there; returns (work id, iteration) moved.

    One UPDATE … RETURNING per (iteration, final, stopped early) group, lowest iteration first, so
    an item's later step only moves once its earlier one did.
    """
    def group(st: Step) -> tuple[int, bool, bool]:
        return st.iteration, st.final, st.stopped_early

    moved: set[tuple[int, int]] = set()
    for (iteration, final, stopped), members in groupby(sorted(steps, key=group), key=group):
        ids = [st.work_id for st in members]
        values: dict[str, object] = {"iterations_done": iteration, "updated_at": now,
                                     "lease_expires_at": now + timedelta(seconds=lease_seconds)}
        if stopped:
            values["stopped_early_at"] = iteration
        if final:
            values.update(status="done", lease_owner=None, lease_expires_at=None)
        for start in range(0, len(ids), _MAX_IDS):
            rows = s.execute(update(WorkItem).where(
                WorkItem.id.in_(ids[start:start + _MAX_IDS]), WorkItem.lease_owner == worker,
                WorkItem.status == "leased", WorkItem.iterations_done == iteration - 1).values(**values)
                .returning(WorkItem.id))
            moved.update((work_id, iteration) for work_id in rows.scalars())
    return moved


def _candidate_rows(run_id: int, st: Step, sha: dict[str, str]) -> list[tuple[Any, ...]]:
    """The step's new candidates, ranked by score (1 = best; unscored last)."""
    order = sorted(range(len(st.new)), key=lambda i: -(st.new[i][2] if st.new[i][2] is not None else -1e9))
    rank = {i: r for r, i in enumerate(order, start=1)}
    return [(run_id, st.item_id, st.iteration, sha[text], origin, score, rank[i])
            for i, (text, origin, score) in enumerate(st.new)]


def _state_row(run_id: int, st: Step, sha: dict[str, str], now: datetime) -> tuple[Any, ...]:
    best = st.kept[0] if st.kept else None
    return (run_id, st.item_id, st.iteration, sha[best[0]] if best else None, best[1] if best else None,
            fmean(sc for _, sc in st.kept) if st.kept else None, len(st.new),
            [[sha[t], sc] for t, sc in st.kept], now)


def record_error(store: Store, run_id: int, item_id: int | None, stage: str, kind: str, message: str,
                 attempt: int = 1) -> None:
    """An error row (its own transaction: it must survive the step's rollback)."""
    store.transact(lambda s: s.add(ErrorEvent(
        run_id=run_id, item_id=item_id, stage=stage, kind=kind,
        message=message.splitlines()[0][:2000] if message else kind, attempt=attempt)))


def fail_item(store: Store, work_id: int, worker: str, final: bool) -> None:
    """After an error: give the item back for a retry, or mark it failed for good."""
    store.transact(lambda s: s.execute(update(WorkItem).where(WorkItem.id == work_id, WorkItem.lease_owner == worker)
                                       .values(status="failed" if final else "pending", lease_owner=None,
                                               lease_expires_at=None, updated_at=utcnow())))
