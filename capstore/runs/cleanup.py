"""Deleting runs, and collecting what failed starts leave behind (``capstore runs delete``, ``capstore gc``).

A run's rows live in every table that references ``runs``: work items, candidates (and the metric
values of those candidates), iteration states, captions, usage events, errors and metric values.
``delete_runs`` removes all of them and the run rows in ONE transaction. Shared content stays:
texts, images, pools and the model caches may serve other runs; ``collect_garbage`` removes what
nothing references any more.

What ``collect_garbage`` removes, in one transaction:
- debris runs: ``interrupted`` or ``pending`` with no committed step (no candidate, iteration state
  or caption), older than ``older_than`` (a run being created right now is not debris), with no
  live lease and seeding no other run;
- pools no run uses (their lines stay where anything else references them);
- texts that no dataset reference, pool, candidate, iteration state (best or kept) or caption
  references, with their embeddings, and the score sets none of whose texts is left then;
- images that no dataset item references, with their files, blobs, embeddings and cached scores.
Generation-cache entries stay (keyed by request, not by content: a rerun replays them).

On PostgreSQL debris runs are selected ``FOR UPDATE`` and their conditions asked again by the
statements that delete them (a worker may lease an item meanwhile; its commit's foreign key checks
wait for gc). The content pass first takes ``SHARE ROW EXCLUSIVE`` locks on ``texts``, ``images`` and
``text_sets``: a worker's commit inserts its texts (or finds them) and the rows that reference them
in one transaction, as ``create_run`` inserts a pool with its run, so either finishes before gc
looks or waits and re-inserts what gc removed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Callable, Sequence

from sqlalchemy import ColumnElement, Table, bindparam, delete, exists, func, or_, select, text
from sqlalchemy.orm import Session

from capstore.backends.caching import text_shas_of
from capstore.errors import InputError
from capstore.runs.leases import store_now
from capstore.store.engine import Store
from capstore.store.ids import check_run_id
from capstore.store.schema import (Base, Candidate, CandidateEval, CandidateEvalValue, Caption, ErrorEvent,
                                   IterationState, MetricValue, Run, ScoreSet, TextSet, TextSetMember, UsageEvent,
                                   WorkItem)

# Every table with a run_id, children before parents. A test checks this against the schema's foreign keys.
RUN_TABLES: tuple[type[Base], ...] = (MetricValue, CandidateEval, Caption, IterationState, Candidate, WorkItem,
                                      UsageEvent, ErrorEvent)
DEBRIS_STATUSES = ("interrupted", "pending")
DEFAULT_OLDER_THAN = timedelta(minutes=10)
_SETS_PER_READ = 2_000  # score sets read at a time (~50 text shas each)
_SHAS_PER_QUERY = 10_000
MAX_OLDER_THAN = timedelta(days=36_525)  # a century: beyond it, store clocks minus the age leave datetime's range


@dataclass
class GcReport:
    runs: list[int] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)  # table -> rows removed (or to remove, in a dry run)
    dry_run: bool = False

    def describe(self) -> str:
        verb = "would remove" if self.dry_run else "removed"
        runs = ", ".join(map(str, self.runs)) if self.runs else "none"
        counts = ", ".join(f"{n} {table}" for table, n in self.rows.items() if n) or "nothing else"
        return f"gc {verb}: debris runs: {runs}; {counts}"


class _DryRun(Exception):
    """Raised inside a transaction to roll back what a dry run did."""


def delete_runs(store: Store, run_ids: list[int]) -> dict[str, int]:
    """Delete runs and every row that references them, in one transaction; returns rows removed per table."""
    ids = sorted({check_run_id(i) for i in run_ids})  # a number past 64 bits: one line, not a driver overflow
    if not ids:
        raise InputError("name at least one run to delete")

    def unit(s: Session) -> dict[str, int]:
        found = set(s.scalars(select(Run.id).where(Run.id.in_(ids))))
        if missing := [i for i in ids if i not in found]:
            raise InputError(f"no run {missing[0]} in this store (see `capstore runs list`)")
        _refuse_busy_or_parent(s, ids)
        return _delete(s, ids)

    return store.transact(unit)


def _refuse_busy_or_parent(s: Session, ids: list[int]) -> None:
    now = store_now(s)
    busy = s.execute(select(WorkItem.run_id, func.count(), func.max(WorkItem.lease_expires_at)).where(
        WorkItem.run_id.in_(ids), WorkItem.status == "leased", WorkItem.lease_expires_at >= now)
        .group_by(WorkItem.run_id).order_by(WorkItem.run_id)).first()
    if busy:
        raise InputError(f"run {busy[0]} has {busy[1]} items leased by live workers (until {busy[2]:%H:%M:%S} UTC): "
                         "stop them or wait, then delete")
    child = s.execute(select(Run.id, Run.parent_run_id).where(Run.parent_run_id.in_(ids), Run.id.not_in(ids))
                      .order_by(Run.id)).first()
    if child:
        raise InputError(f"run {child[1]} seeded run {child[0]} (--init-from): delete run {child[0]} too, or keep both")


def _delete(s: Session, ids: list[int], run_conditions: Sequence[ColumnElement[bool]] = ()) -> dict[str, int]:
    """Every row of runs ``ids`` (with ``run_conditions``, the runs' rows only where those still hold)."""
    counts: dict[str, int] = {}
    of_runs = select(Candidate.id).where(Candidate.run_id.in_(ids))
    counts["metric_values"] = s.execute(delete(MetricValue).where(
        or_(MetricValue.run_id.in_(ids), MetricValue.candidate_id.in_(of_runs)))).rowcount
    # An evaluation's candidate values by its key (no foreign key cascade needed), then the evaluation.
    counts["candidate_eval_values"] = s.execute(delete(CandidateEvalValue).where(CandidateEvalValue.eval_id.in_(
        select(CandidateEval.id).where(CandidateEval.run_id.in_(ids))))).rowcount
    for model in RUN_TABLES[1:]:
        table: Table = model.__table__  # type: ignore[assignment]
        counts[table.name] = s.execute(delete(table).where(table.c.run_id.in_(ids))).rowcount
    counts["runs"] = s.execute(delete(Run).where(Run.id.in_(ids), *run_conditions)).rowcount
    return counts


def debris_runs(s: Session, older_than: timedelta = DEFAULT_OLDER_THAN, lock: bool = False) -> list[int]:
    """Runs a failed start left: interrupted or pending, nothing committed, old enough, no live lease, no child.

    ``lock``: lock their rows (``FOR UPDATE`` on PostgreSQL), so no worker commits a candidate or
    caption into them (its foreign key check waits) until the transaction ends.
    """
    query = select(Run.id).where(*_debris_conditions(s, older_than)).order_by(Run.id)
    if lock:
        query = query.with_for_update(of=Run)
    return list(s.scalars(query))


def _debris_conditions(s: Session, older_than: timedelta) -> list[ColumnElement[bool]]:
    now = store_now(s)
    committed = or_(*(exists().where(model.run_id == Run.id)  # type: ignore[attr-defined]
                      for model in (Candidate, IterationState, Caption)))
    live = exists().where(WorkItem.run_id == Run.id, WorkItem.status == "leased", WorkItem.lease_expires_at >= now)
    parent = Run.__table__.alias("child")
    seeds = exists().where(parent.c.parent_run_id == Run.id)
    return [Run.status.in_(DEBRIS_STATUSES), Run.created_at <= now - older_than, ~committed, ~live, ~seeds]


def _delete_debris(s: Session, ids: list[int], older_than: timedelta) -> tuple[list[int], dict[str, int]]:
    """Delete the runs of ``ids`` that are debris still (the conditions asked again, now that their rows
    are locked: a worker may have leased an item since they were selected); returns them and rows removed."""
    still = list(s.scalars(select(Run.id).where(Run.id.in_(ids), *_debris_conditions(s, older_than))
                           .order_by(Run.id)))
    return still, (_delete(s, still, _debris_conditions(s, older_than)) if still else {})


def check_older_than(older_than: timedelta | float) -> timedelta:
    """``--older-than`` (seconds, or a timedelta) from 0 to a century; else a one-line InputError."""
    seconds = older_than.total_seconds() if isinstance(older_than, timedelta) else older_than
    if not isinstance(seconds, (int, float)) or not 0 <= seconds <= MAX_OLDER_THAN.total_seconds():
        raise InputError(f"--older-than {seconds}: give seconds from 0 to {MAX_OLDER_THAN.total_seconds():.0f} "
                         "(a century)")
    return timedelta(seconds=seconds)


def collect_garbage(store: Store, dry_run: bool = False,
                    older_than: timedelta | float = DEFAULT_OLDER_THAN) -> GcReport:
    """Remove debris runs, unused pools and content nothing references (see the module's docstring);
    ``older_than``: a timedelta or seconds."""
    older_than = check_older_than(older_than)

    def unit(s: Session) -> GcReport:
        report = GcReport(dry_run=dry_run)
        report.runs, report.rows = _delete_debris(s, debris_runs(s, older_than, lock=True), older_than)
        report.rows.update(_collect_content(s, older_than))
        if dry_run:
            raise _DryRun(report)
        return report

    try:
        return store.transact(unit)
    except _DryRun as done:
        return done.args[0]  # type: ignore[no-any-return]


def _collect_content(s: Session, older_than: timedelta) -> dict[str, int]:
    """Unused pools, then unreferenced texts and images with their cache rows; rows removed per table."""
    postgres = s.get_bind().dialect.name == "postgresql"
    if postgres:
        # text_sets too: a run's creation inserts its pool and the run in one transaction, so the pool
        # pass below either sees the run or waits until it is committed.
        s.execute(text("LOCK TABLE texts, images, text_sets IN SHARE ROW EXCLUSIVE MODE"))
    counts = {"text_set_members": 0, "text_sets": 0}
    now = store_now(s)
    used = {cfg.get("pool_sha") for cfg in s.scalars(select(Run.config)) if isinstance(cfg, dict)}
    unused = [sha for sha in s.scalars(select(TextSet.sha256).where(
        TextSet.kind == "pool", TextSet.created_at <= now - older_than)) if sha not in used]
    for start in range(0, len(unused), 10_000):
        part = unused[start:start + 10_000]
        counts["text_set_members"] += s.execute(delete(TextSetMember).where(TextSetMember.set_sha.in_(part))).rowcount
        counts["text_sets"] += s.execute(delete(TextSet).where(TextSet.sha256.in_(part))).rowcount
    # Referenced shas go into a keyed temporary table first, so one anti-join decides on either database.
    kept = (("k.value ->> 0", "iteration_states, json_array_elements(iteration_states.kept::json) AS k(value)")
            if postgres else ("json_extract(j.value, '$[0]')", "iteration_states, json_each(iteration_states.kept) AS j"))
    sources = [("text_sha", '"references"'), ("text_sha", "text_set_members"), ("text_sha", "candidates"),
               ("best_text_sha", "iteration_states"), ("text_sha", "captions"), kept]
    s.execute(text("CREATE TEMPORARY TABLE gc_refs (sha VARCHAR(64) PRIMARY KEY)"))
    for expr, source in sources:  # (SQLite needs the WHERE to parse ON CONFLICT after a SELECT)
        s.execute(text(f"INSERT INTO gc_refs (sha) SELECT DISTINCT {expr} FROM {source} "
                       f"WHERE {expr} IS NOT NULL ON CONFLICT DO NOTHING"))
    _add(counts, _remove(s, "texts", "SELECT 1 FROM gc_refs WHERE gc_refs.sha = texts.sha256",
                         [("embedding_cache", "content_sha", "content_kind = 'text'")], _orphaned_score_sets))
    s.execute(text("DROP TABLE gc_refs"))
    _add(counts, _remove(s, "images", "SELECT 1 FROM items WHERE items.image_sha = images.sha256",
                         [("embedding_cache", "content_sha", "content_kind = 'image'"), ("score_sets", "image_sha", ""),
                          ("image_files", "image_sha", ""), ("image_blobs", "image_sha", "")]))
    return counts


def _remove(s: Session, table: str, referenced: str, dependents: list[tuple[str, str, str]],
            more: Callable[[Session, str], dict[str, int]] | None = None) -> dict[str, int]:
    """Delete the rows of ``table`` (keyed by ``sha256``) for which ``referenced`` finds nothing, and
    the rows of ``dependents`` (table, sha column, extra condition) keyed by them first (and ``more``'s,
    given the name of the temporary table of those shas)."""
    orphans = f"gc_{table}"
    s.execute(text(f"CREATE TEMPORARY TABLE {orphans} (sha VARCHAR(64) PRIMARY KEY)"))
    s.execute(text(f"INSERT INTO {orphans} (sha) SELECT sha256 FROM {table} WHERE NOT EXISTS ({referenced})"))
    counts: dict[str, int] = more(s, orphans) if more else {}
    for dependent, column, condition in dependents:
        extra = f" AND {condition}" if condition else ""
        counts[dependent] = s.execute(text(
            f"DELETE FROM {dependent} WHERE {column} IN (SELECT sha FROM {orphans}){extra}")).rowcount
    counts[table] = s.execute(text(f"DELETE FROM {table} WHERE sha256 IN (SELECT sha FROM {orphans})")).rowcount
    s.execute(text(f"DROP TABLE {orphans}"))
    return counts


def _orphaned_score_sets(s: Session, orphans: str) -> dict[str, int]:
    """Delete the score sets none of whose texts stays stored (none in ``texts`` but out of
    ``orphans``); a set with one text left stays whole. Read in id order, a chunk at a time. (A set
    that a worker writes while its step commit waits for this gc's lock on ``texts`` may go: a cache,
    its scores are computed again if asked for.)"""
    doomed, last = [], 0
    kept_sql = text(f"SELECT t.sha256 FROM texts t WHERE t.sha256 IN :shas AND NOT EXISTS "
                    f"(SELECT 1 FROM {orphans} o WHERE o.sha = t.sha256)").bindparams(bindparam("shas", expanding=True))
    while True:
        rows = s.execute(select(ScoreSet.id, ScoreSet.text_shas).where(ScoreSet.id > last)
                         .order_by(ScoreSet.id).limit(_SETS_PER_READ)).all()
        if not rows:
            break
        last = rows[-1][0]
        shas = {row[0]: text_shas_of(row[1]) for row in rows}
        wanted = sorted({sha for group in shas.values() for sha in group})
        left: set[str] = set()
        for start in range(0, len(wanted), _SHAS_PER_QUERY):
            left.update(s.scalars(kept_sql, {"shas": wanted[start:start + _SHAS_PER_QUERY]}))
        doomed += [set_id for set_id, group in shas.items() if left.isdisjoint(group)]
    for start in range(0, len(doomed), _SHAS_PER_QUERY):
        s.execute(delete(ScoreSet).where(ScoreSet.id.in_(doomed[start:start + _SHAS_PER_QUERY])))
    return {"score_sets": len(doomed)}


def _add(total: dict[str, int], more: dict[str, int]) -> None:
    for table, n in more.items():
        total[table] = total.get(table, 0) + n
