"""Claiming work items with leases, so many workers share a run and a dead one's items come back.

A worker claims pending items (or items whose lease expired) in one write transaction: SQLite takes
the write lock up front (BEGIN IMMEDIATE, waiting on busy), PostgreSQL skips rows another worker
has locked (``FOR UPDATE SKIP LOCKED``). Leases are short (``DEFAULT_LEASE_SECONDS``) and renewed
by the worker's heartbeat (``capstore.runs.heartbeat``) while it lives, so a dead worker's items are
claimable again within one lease on any machine. Every committed iteration also renews the item's
lease and is only accepted while this worker still holds it (see ``steps.commit_steps``); the
unique keys of iteration states and captions make a second completion impossible.

Lease times come from the database's clock on PostgreSQL (one clock for all machines) and from
this machine's on SQLite (a file store lives on one machine). Worker ids are ``host:pid:random``,
so ``resume`` on the same host can free the leases of processes that no longer exist (a SIGKILLed
run) without waiting for them to expire.
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session

from capstore.errors import InputError
from capstore.store.engine import Store
from capstore.store.schema import WorkItem, utcnow

DEFAULT_LEASE_SECONDS = 60
LEASE_ENV = "CAPSTORE_LEASE_SECONDS"
MIN_LEASE_SECONDS = 0.5
MAX_LEASE_SECONDS = 86_400.0  # a day: a lease far longer would keep a dead worker's items from others for good


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def lease_seconds(configured: float | None) -> float:
    """The lease length: ``$CAPSTORE_LEASE_SECONDS`` if set, else ``configured`` (the run's), else 60 s."""
    raw = os.environ.get(LEASE_ENV)
    if raw:
        try:
            value = float(raw)
        except ValueError:
            value = float("nan")
        if not MIN_LEASE_SECONDS <= value <= MAX_LEASE_SECONDS:  # NaN fails both
            raise InputError(f"{LEASE_ENV}={raw!r}: expected seconds from {MIN_LEASE_SECONDS} to "
                             f"{MAX_LEASE_SECONDS:.0f} (a day)")
        return value
    return float(configured or DEFAULT_LEASE_SECONDS)


def store_now(session: Session) -> datetime:
    """Now by the store's clock: the server's on PostgreSQL, this machine's (UTC) on SQLite."""
    if session.get_bind().dialect.name == "postgresql":
        return session.scalar(select(func.statement_timestamp()))  # type: ignore[return-value]
    return utcnow()


def as_utc(dt: datetime | None) -> datetime | None:
    """``dt`` as an aware UTC datetime."""
    # SQLite gives naive datetimes back; they were written as UTC.
    return dt.replace(tzinfo=timezone.utc) if dt is not None and dt.tzinfo is None else dt


def claim(store: Store, run_id: int, worker: str, n: int, lease_seconds: float) -> list[tuple[int, int, int]]:
    """Lease up to ``n`` claimable items; returns (work item id, item id, iterations done)."""
    def unit(s: Session) -> list[tuple[int, int, int]]:
        now = store_now(s)
        claimable = or_(WorkItem.status == "pending",
                        and_(WorkItem.status == "leased",
                             or_(WorkItem.lease_expires_at < now, WorkItem.lease_expires_at.is_(None))))
        query = (select(WorkItem.id, WorkItem.item_id, WorkItem.iterations_done)
                 .where(WorkItem.run_id == run_id, claimable).order_by(WorkItem.id).limit(n))
        if store.dialect == "postgresql":
            query = query.with_for_update(skip_locked=True)
        rows = s.execute(query).all()
        if rows:
            s.execute(update(WorkItem).where(WorkItem.id.in_([r[0] for r in rows])).values(
                status="leased", lease_owner=worker, lease_expires_at=now + timedelta(seconds=lease_seconds),
                attempts=WorkItem.attempts + 1, updated_at=now))
        return [(r[0], r[1], r[2]) for r in rows]

    return store.transact(unit)


def renew(store: Store, run_id: int, worker: str, lease_seconds: float) -> int:
    """Push back the expiry of every item of ``run_id`` this worker holds; returns how many.

    On PostgreSQL rows locked right now (this worker's own step commit, which renews them itself)
    are skipped rather than waited for, so a heartbeat never takes part in a lock cycle.
    """
    def unit(s: Session) -> int:
        now = store_now(s)
        mine = (select(WorkItem.id).where(WorkItem.run_id == run_id, WorkItem.status == "leased",
                                          WorkItem.lease_owner == worker))
        if store.dialect == "postgresql":
            mine = mine.with_for_update(skip_locked=True)
        ids = s.execute(mine).scalars().all()
        if ids:
            s.execute(update(WorkItem).where(WorkItem.id.in_(ids), WorkItem.lease_owner == worker)
                      .values(lease_expires_at=now + timedelta(seconds=lease_seconds)))
        return len(ids)

    return store.transact(unit)


def release(store: Store, worker: str, work_ids: list[int]) -> None:
    """Give leased items back (status pending) — on Ctrl-C or when a step must be retried."""
    if not work_ids:
        return
    store.transact(lambda s: s.execute(
        update(WorkItem).where(WorkItem.id.in_(sorted(work_ids)), WorkItem.lease_owner == worker,
                               WorkItem.status == "leased")
        .values(status="pending", lease_owner=None, lease_expires_at=None)))


def release_all(store: Store, run_id: int, worker: str) -> None:
    """Give back every item of ``run_id`` this worker still holds."""
    store.transact(lambda s: s.execute(
        update(WorkItem).where(WorkItem.run_id == run_id, WorkItem.lease_owner == worker,
                               WorkItem.status == "leased")
        .values(status="pending", lease_owner=None, lease_expires_at=None)))


def free_dead_leases(store: Store, run_id: int) -> int:
    """Return to pending the leases of this host's worker processes that no longer exist."""
    host = socket.gethostname()

    def unit(s: Session) -> int:
        leased = s.execute(select(WorkItem.id, WorkItem.lease_owner).where(
            WorkItem.run_id == run_id, WorkItem.status == "leased")).all()
        dead = sorted(wid for wid, owner in leased if owner and _is_dead_local(owner, host))
        if dead:
            s.execute(update(WorkItem).where(WorkItem.id.in_(dead), WorkItem.status == "leased")
                      .values(status="pending", lease_owner=None, lease_expires_at=None))
        return len(dead)

    return store.transact(unit)


@dataclass
class OpenWork:
    """What is left of a run, as another worker sees it."""

    pending: int  # claimable now
    expired: int  # leased, lease run out: claimable now
    held: int  # leased by live workers
    next_expiry_s: float | None  # seconds until the first live lease runs out

    @property
    def left(self) -> int:
        return self.pending + self.expired + self.held


def open_work(store: Store, run_id: int, worker: str | None = None) -> OpenWork:
    """Count a run's unfinished items by whether they can be claimed now (``worker``'s own count as held)."""
    with store.read() as s:
        now = store_now(s)
        rows = s.execute(select(WorkItem.status, WorkItem.lease_owner, WorkItem.lease_expires_at).where(
            WorkItem.run_id == run_id, WorkItem.status.in_(("pending", "leased")))).all()
    pending = sum(1 for st, _, _ in rows if st == "pending")
    live = [as_utc(exp) for st, owner, exp in rows
            if st == "leased" and (owner == worker or (exp is not None and as_utc(exp) >= now))]  # type: ignore[operator]
    expired = len(rows) - pending - len(live)
    waits = [(exp - now).total_seconds() for exp in live if exp is not None]  # type: ignore[operator]
    return OpenWork(pending, expired, len(live), max(0.0, min(waits)) if waits else None)


def _is_dead_local(owner: str, host: str) -> bool:
    parts = owner.split(":")
    if len(parts) != 3 or parts[0] != host or not parts[1].isdigit():
        return False
    try:
        os.kill(int(parts[1]), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False
