"""Where a run stands: items done, steps per iteration, device-seconds so far, an ETA; the runs list."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timezone

from sqlalchemy import func, select

from capstore.methods.registry import method_spec
from capstore.runs.config import RunConfig
from capstore.runs.create import load_run
from capstore.runs.leases import as_utc, store_now
from capstore.store.engine import Store
from capstore.store.schema import Dataset, ErrorEvent, IterationState, Run, Split, UsageEvent, WorkItem, utcnow


@dataclass
class RunStatus:
    run_id: int
    method: str
    dataset: str
    status: str
    items: dict[str, int]
    per_iteration: dict[int, int]
    stopped_early: int
    device_seconds: float
    errors: int
    eta_seconds: float | None
    workers: int = 0  # distinct workers holding live leases
    expired: int = 0  # leased items whose lease ran out (their worker died): any worker takes them over

    def describe(self) -> str:
        total = sum(self.items.values())
        lines = [f"run {self.run_id} ({self.method} on {self.dataset}): {self.status}",
                 f"  items: {self.items.get('done', 0)}/{total} done, {self.items.get('leased', 0)} leased, "
                 f"{self.items.get('pending', 0)} pending, {self.items.get('failed', 0)} failed"]
        if self.workers or self.expired:
            lines.append(f"  leases: {self.workers} live worker(s)"
                         + (f"; {self.expired} expired (a worker died: `capstore worker {self.run_id}` takes them over)"
                            if self.expired else ""))
        if self.per_iteration:
            lines.append("  per iteration: " + ", ".join(f"{it}: {n}" for it, n in sorted(self.per_iteration.items())))
        if self.stopped_early:
            lines.append(f"  stopped early: {self.stopped_early} items")
        lines.append(f"  device-seconds so far: {self.device_seconds:.2f}; errors: {self.errors}")
        if self.eta_seconds is not None:
            lines.append(f"  ETA: {self.eta_seconds:.0f} s")
        return "\n".join(lines)


def run_status(store: Store, run_id: int) -> RunStatus:
    """Progress, cost so far and a naive ETA (elapsed time per committed step × steps left)."""
    with store.read() as s:
        run = load_run(s, run_id)
        cfg = RunConfig.from_json(run.config) if run.method != "external" else None
        dataset = s.scalar(select(Dataset.name).join(Split).where(Split.id == run.split_id)) or "?"
        items = dict(s.execute(select(WorkItem.status, func.count()).where(WorkItem.run_id == run_id)
                               .group_by(WorkItem.status)).all())
        per_it = dict(s.execute(select(IterationState.iteration, func.count()).where(IterationState.run_id == run_id)
                                .group_by(IterationState.iteration)).all())
        stopped = s.scalar(select(func.count()).where(WorkItem.run_id == run_id, WorkItem.stopped_early_at.is_not(None)))
        dev = s.scalar(select(func.coalesce(func.sum(UsageEvent.device_seconds), 0.0)).where(UsageEvent.run_id == run_id))
        errors = s.scalar(select(func.count()).select_from(ErrorEvent).where(ErrorEvent.run_id == run_id))
        now = store_now(s)
        leases = s.execute(select(WorkItem.lease_owner, WorkItem.lease_expires_at).where(
            WorkItem.run_id == run_id, WorkItem.status == "leased")).all()
        left_rows = s.execute(select(WorkItem.iterations_done).where(
            WorkItem.run_id == run_id, WorkItem.status.in_(("pending", "leased")))).scalars().all()
    eta = None
    steps_done = sum(per_it.values())
    if cfg and run.started_at and steps_done and left_rows and run.status == "running":
        started = run.started_at.replace(tzinfo=timezone.utc) if run.started_at.tzinfo is None else run.started_at
        per_step = (utcnow() - started).total_seconds() / steps_done
        per_item = method_spec(cfg.method).steps_per_item(cfg.iterations)
        eta = per_step * sum(per_item - (d + 1) for d in left_rows)
    live = {owner for owner, exp in leases if exp is not None and as_utc(exp) >= now}
    expired = sum(1 for _, exp in leases if exp is None or as_utc(exp) < now)
    return RunStatus(run_id, run.method, dataset, run.status, items, per_it, int(stopped or 0), float(dev or 0.0),
                     int(errors or 0), eta, len(live), expired)


def list_runs(store: Store) -> list[tuple[int, str, str, str, str, int, int, str | None]]:
    """(id, method, dataset/split, status, created, items done, items, label) for every run."""
    with store.read() as s:
        rows = s.execute(
            select(Run.id, Run.method, Dataset.name, Split.name, Run.status, Run.created_at, Run.label)
            .join(Split, Split.id == Run.split_id).join(Dataset, Dataset.id == Split.dataset_id).order_by(Run.id)
        ).all()
        counts = s.execute(select(WorkItem.run_id, WorkItem.status, func.count()).group_by(WorkItem.run_id, WorkItem.status)).all()
    by_run: dict[int, dict[str, int]] = {}
    for rid, status, n in counts:
        by_run.setdefault(rid, {})[status] = n
    return [(r.id, r.method, f"{r[2]}/{r[3]}", r.status, r.created_at.strftime("%Y-%m-%d %H:%M"),
             by_run.get(r.id, {}).get("done", 0), sum(by_run.get(r.id, {}).values()), r.label) for r in rows]
