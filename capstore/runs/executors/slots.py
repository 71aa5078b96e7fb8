"""Worker slots: one stable name per actor of an execution, across the actor's restarts.

A worker id is ``host:pid:random``; an actor's random part is its slot (``ray<token>-<i>``), so the
driver, or the actor's next incarnation on any node, can find the items a dead incarnation still
holds and give them back at once instead of waiting a lease. A zombie (a partitioned node that is
still running) cannot do harm: its next commit or renewal finds the lease no longer its own.
"""

from __future__ import annotations

import os
import socket
import uuid

from sqlalchemy import select

from capstore.runs.leases import release_all
from capstore.store.engine import Store
from capstore.store.schema import WorkItem


def new_slots(n: int) -> list[str]:
    """``n`` slot names unique to one execution."""
    token = uuid.uuid4().hex[:8]
    return [f"ray{token}-{i}" for i in range(n)]


def slot_worker_id(slot: str) -> str:
    """This process's worker id in ``slot`` (the ``host:pid:`` part lets ``resume`` see a dead local pid)."""
    return f"{socket.gethostname()}:{os.getpid()}:{slot}"


def release_slots(store: Store, run_id: int, slots: list[str], keep: str | None = None) -> int:
    """Give back every item of ``run_id`` leased by a worker of ``slots`` (except worker ``keep``); returns how many."""
    with store.read() as s:
        owners = s.execute(select(WorkItem.lease_owner, WorkItem.id).where(
            WorkItem.run_id == run_id, WorkItem.status == "leased")).all()
    suffixes = tuple(f":{slot}" for slot in slots)
    mine = {owner for owner, _ in owners if owner and owner.endswith(suffixes) and owner != keep}
    for owner in sorted(mine):
        release_all(store, run_id, owner)
    return sum(1 for owner, _ in owners if owner in mine)
