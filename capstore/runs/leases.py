"""Claiming work items with leases, so many workers share a run and a dead one's items come back.

A worker claims pending items (or items whose lease expired) in one write transaction: SQLite takes
the write lock up front (BEGIN IMMEDIATE, waiting on busy), PostgreSQL skips rows another worker
has locked (``FOR UPDATE SKIP LOCKED``). Every committed iteration renews the item's lease and is
only accepted while this worker still holds it (see ``steps.commit_steps``); the unique keys of
iteration states and captions make a second completion impossible.

Worker ids are ``host:pid:random``, so ``resume`` on the same host can free the leases of processes
that no longer exist (a SIGKILLed run) without waiting for them to expire.
"""

from __future__ import annotations

import os
import socket
import uuid
from datetime import datetime, timedelta, timezone

from sqlalchemy import and_, or_, select, update

from capstore.store.engine import Store
from capstore.store.schema import WorkItem, utcnow


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _aware(dt: datetime | None) -> datetime | None:
    # SQLite gives naive datetimes back; they were written as UTC.
    return dt.replace(tzinfo=timezone.utc) if dt is not None and dt.tzinfo is None else dt


def claim(store: Store, run_id: int, worker: str, n: int, lease_seconds: int) -> list[tuple[int, int, int]]:
    """Lease up to ``n`` claimable items; returns (work item id, item id, iterations done)."""
    now = utcnow()
    with store.write() as s:
        claimable = or_(WorkItem.status == "pending",
                        and_(WorkItem.status == "leased", WorkItem.lease_expires_at < now))
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


def release(store: Store, worker: str, work_ids: list[int]) -> None:
    """Give leased items back (status pending) — on Ctrl-C or when a step must be retried."""
    if not work_ids:
        return
    with store.write() as s:
        s.execute(update(WorkItem).where(WorkItem.id.in_(work_ids), WorkItem.lease_owner == worker,
                                         WorkItem.status == "leased")
                  .values(status="pending", lease_owner=None, lease_expires_at=None))


def free_dead_leases(store: Store, run_id: int) -> int:
    """Return to pending the leases of this host's worker processes that no longer exist."""
    host = socket.gethostname()
    with store.write() as s:
        leased = s.execute(select(WorkItem.id, WorkItem.lease_owner).where(
            WorkItem.run_id == run_id, WorkItem.status == "leased")).all()
        dead = [wid for wid, owner in leased if owner and _is_dead_local(owner, host)]
        if dead:
            s.execute(update(WorkItem).where(WorkItem.id.in_(dead))
                      .values(status="pending", lease_owner=None, lease_expires_at=None))
    return len(dead)


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
