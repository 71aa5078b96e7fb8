"""The bulk write path (store.bulk.insert_rows, Store.write(bulk=True)) and batched step commits, on both databases."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from capstore.runs.mils_worker import first_candidate_iterations
from capstore.runs.steps import CANDIDATE_COLUMNS, STATE_COLUMNS, Step, commit_steps
from capstore.store.bulk import DanglingReference, insert_rows, insert_tables
from capstore.store.content import put_texts, sha256_text
from capstore.store.schema import (Candidate, Caption, Dataset, IterationState, Item, Run, Split, Text, WorkItem,
                                   utcnow)

WORKER = "test:1:bulk"


def _run_with_items(store, n: int) -> tuple[int, list[int], list[int]]:  # type: ignore[no-untyped-def]
    """A run over ``n`` items leased to WORKER; returns (run id, item ids, work item ids)."""
    with store.write() as s:
        ds = Dataset(name="bulk")
        s.add(ds)
        s.flush()
        split = Split(dataset_id=ds.id, name="test")
        s.add(split)
        s.flush()
        items = [Item(split_id=split.id, external_id=str(i)) for i in range(n)]
        s.add_all(items)
        run = Run(method="mils", config={}, config_hash="b" * 64, split_id=split.id, status="running")
        s.add(run)
        s.flush()
        work = [WorkItem(run_id=run.id, item_id=it.id, status="leased", lease_owner=WORKER, attempts=1,
                         lease_expires_at=utcnow() + timedelta(hours=1)) for it in items]
        s.add_all(work)
        s.flush()
        return run.id, [it.id for it in items], [w.id for w in work]


def _count(store, model) -> int:  # type: ignore[no-untyped-def]
    with store.read() as s:
        return int(s.scalar(select(func.count()).select_from(model)) or 0)


def test_insert_rows_reads_back_like_orm_rows_across_statement_chunks(store) -> None:  # type: ignore[no-untyped-def]
    run, items, _ = _run_with_items(store, 3)
    texts = [f"caption {i}" for i in range(1234)]
    with store.write() as s:
        shas = put_texts(s, texts)
    # 1,234 rows: two full 500-row statements and a remainder of 234.
    cands = [(run, items[i % 3], i // 300, shas[i], "generated" if i % 2 else "pool", i / 1000, i % 50 + 1)
             for i in range(1234)]
    now = utcnow()
    states = [(run, items[0], 0, shas[0], 0.5, 0.25, 2, [[shas[0], 0.5], [shas[1], 0.0]], now)]
    with store.write(bulk=True) as s:
        assert insert_rows(s, Candidate.__table__, CANDIDATE_COLUMNS, cands) == 1234
        insert_rows(s, IterationState.__table__, STATE_COLUMNS, states)
    with store.read() as s:
        got = s.execute(select(Candidate.run_id, Candidate.item_id, Candidate.iteration, Candidate.text_sha,
                               Candidate.origin, Candidate.score, Candidate.rank).order_by(Candidate.id)).all()
        state = s.scalars(select(IterationState)).one()
    assert [tuple(r) for r in got] == cands
    assert state.kept == [[shas[0], 0.5], [shas[1], 0.0]] and state.mean_kept_score == 0.25
    assert abs(state.created_at.replace(tzinfo=None) - now.replace(tzinfo=None)) < timedelta(seconds=1)


@pytest.mark.parametrize("column", ["text_sha", "item_id", "run_id"])
def test_a_dangling_reference_is_refused_and_the_whole_transaction_rolled_back(store, column: str) -> None:  # type: ignore[no-untyped-def]
    run, items, _ = _run_with_items(store, 1)
    row = {"run_id": run, "item_id": items[0], "iteration": 0, "text_sha": None, "origin": "pool", "score": 0.1,
           "rank": 1}
    bad = {"text_sha": "f" * 64, "item_id": 999_999, "run_id": 999_999}[column]
    with pytest.raises(DanglingReference, match=f"candidates.*{bad}"):
        with store.write(bulk=True) as s:
            row["text_sha"] = put_texts(s, ["written in the same transaction"])[0]
            good = tuple(row[c] for c in CANDIDATE_COLUMNS)
            insert_rows(s, Candidate.__table__, CANDIDATE_COLUMNS, [good])
            row[column] = bad
            insert_rows(s, Candidate.__table__, CANDIDATE_COLUMNS, [tuple(row[c] for c in CANDIDATE_COLUMNS)])
    assert _count(store, Candidate) == 0
    assert sha256_text("written in the same transaction") not in {t for (t,) in _texts(store)}


def _texts(store):  # type: ignore[no-untyped-def]
    with store.read() as s:
        return s.execute(select(Text.sha256)).all()


def test_bulk_path_still_enforces_check_and_unique_constraints(store) -> None:  # type: ignore[no-untyped-def]
    run, items, _ = _run_with_items(store, 1)
    with store.write() as s:
        sha = put_texts(s, ["x"])[0]
    with pytest.raises(IntegrityError):
        with store.write(bulk=True) as s:
            insert_rows(s, Candidate.__table__, CANDIDATE_COLUMNS, [(run, items[0], 0, sha, "made-up", 0.1, 1)])
    with pytest.raises(IntegrityError):
        with store.write(bulk=True) as s:
            insert_rows(s, Candidate.__table__, CANDIDATE_COLUMNS, [(run, items[0], 0, sha, "pool", 0.1, 1)] * 2)
    assert _count(store, Candidate) == 0


def test_foreign_keys_are_enforced_again_after_a_bulk_transaction(sqlite_url: str) -> None:
    from capstore.store import open_store
    from capstore.store.engine import SQLITE_DEFAULT_CACHE_KIB

    store = open_store(sqlite_url)
    run, items, _ = _run_with_items(store, 1)
    with store.write(bulk=True) as s:
        conn = s.connection()
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 0
    with store.engine.connect() as conn:  # the pooled connection the bulk transaction used
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA cache_size").scalar() == SQLITE_DEFAULT_CACHE_KIB
    with pytest.raises(IntegrityError, match="FOREIGN KEY"):
        with store.write() as s:
            s.add(Candidate(run_id=run, item_id=items[0], iteration=0, text_sha="e" * 64, origin="pool"))
    store.dispose()


def _step(work: int, item: int, iteration: int, final: bool = False) -> Step:
    new = [(f"item {item} it {iteration} cand {k}", "generated", k / 10) for k in range(3)]
    kept = sorted(((t, sc) for t, _, sc in new), key=lambda p: -p[1])[:2]
    return Step(work, item, iteration, new, kept, final=final, caption=(kept[0][0], kept[0][1], iteration) if final else None)


def test_commit_steps_writes_a_batch_in_one_go_and_skips_only_lost_items(store) -> None:  # type: ignore[no-untyped-def]
    run, items, work = _run_with_items(store, 3)
    with store.write() as s:  # item 2 was taken over by another worker
        s.execute(update(WorkItem).where(WorkItem.id == work[2]).values(lease_owner="test:2:other"))
    steps = [_step(work[0], items[0], 0), _step(work[0], items[0], 1, final=True),  # two iterations in one call
             _step(work[1], items[1], 0), _step(work[2], items[2], 0), _step(work[2], items[2], 1)]
    lost = commit_steps(store, run, WORKER, steps, lease_seconds=60)
    assert [(st.item_id, st.iteration) for st in lost] == [(items[2], 0), (items[2], 1)]
    with store.read() as s:
        cands = s.execute(select(Candidate.item_id, Candidate.iteration, Candidate.rank, Candidate.score)
                          .order_by(Candidate.id)).all()
        states = s.execute(select(IterationState.item_id, IterationState.iteration)).all()
        wi = dict(s.execute(select(WorkItem.item_id, WorkItem.status)).all())
        caption = s.execute(select(Caption.item_id, Caption.text_sha)).all()
    assert {(i, it) for i, it, _, _ in cands} == {(items[0], 0), (items[0], 1), (items[1], 0)}
    assert all(rank == 3 - round(score * 10) for _, _, rank, score in cands)  # rank 1 = best score
    assert sorted(states) == sorted([(items[0], 0), (items[0], 1), (items[1], 0)])
    assert wi == {items[0]: "done", items[1]: "leased", items[2]: "leased"}
    assert caption == [(items[0], sha256_text(f"item {items[0]} it 1 cand 2"))]
    # The same steps again: already committed, so all lost and nothing written twice.
    again = commit_steps(store, run, WORKER, steps[:3], lease_seconds=60)
    assert len(again) == 3 and _count(store, Candidate) == 9


@pytest.mark.postgres
def test_a_postgres_step_commit_keeps_its_run_and_items_by_its_locked_work_items(pg_url: str) -> None:
    """A step commit reads the server's clock in the statement that locks its work items and locks
    its run and items no further: while it runs, deleting the run (which cascades to the work items)
    or an item (which they reference) waits for it all the same."""
    import psycopg
    from sqlalchemy import create_engine, text

    from capstore.runs.steps import _lock_work_items
    from capstore.store import open_store

    store = open_store(pg_url)
    run, items, work = _run_with_items(store, 3)
    seen = _statements(store)
    assert commit_steps(store, run, WORKER, [_step(work[0], items[0], 0), _step(work[1], items[1], 0)], 60) == []
    assert [sql for sql in seen if "statement_timestamp" in sql] == [
        sql for sql in seen if "FOR UPDATE" in sql and "work_items" in sql]  # one statement for both
    assert not [sql for sql in seen if "FOR KEY SHARE" in sql and ('"runs"' in sql or '"items"' in sql)]
    assert any("'replica'" in sql for sql in seen) and _count(store, Candidate) == 6
    other = create_engine(pg_url)
    try:
        with store.write(bulk=True) as s:
            _lock_work_items(s, run, [_step(work[2], items[2], 0)])  # an item nothing else references yet
            for statement in (f"DELETE FROM runs WHERE id = {run}", f"DELETE FROM items WHERE id = {items[2]}"):
                with other.connect() as c, pytest.raises(Exception) as waited:
                    c.exec_driver_sql("SET lock_timeout = '300ms'")
                    c.execute(text(statement))
                assert isinstance(waited.value.orig, psycopg.errors.LockNotAvailable), statement  # type: ignore[attr-defined]
    finally:
        other.dispose()
        store.dispose()


def _statements(store) -> list[str]:  # type: ignore[no-untyped-def]
    from sqlalchemy import event

    seen: list[str] = []
    event.listen(store.engine, "before_cursor_execute", lambda *a: seen.append(a[2]))
    return seen


def test_several_tables_in_one_go_turn_the_triggers_off_once_and_still_refuse_a_dangling_reference(store) -> None:  # type: ignore[no-untyped-def]
    run, items, _ = _run_with_items(store, 2)
    with store.write() as s:
        shas = put_texts(s, ["one", "two"])
    now = utcnow()
    cands = [(run, item, 0, sha, "pool", 0.5, 1) for item, sha in zip(items, shas)]
    states = [(run, item, 0, sha, 0.5, 0.5, 1, [[sha, 0.5]], now) for item, sha in zip(items, shas)]
    seen = _statements(store)
    with store.write(bulk=True) as s:
        assert insert_tables(s, [(Candidate.__table__, CANDIDATE_COLUMNS, cands),
                                 (Caption.__table__, ("run_id", "item_id", "text_sha"), []),  # nothing: skipped
                                 (IterationState.__table__, STATE_COLUMNS, states)]) == 4
    if store.dialect == "postgresql":
        assert sum("'replica'" in sql for sql in seen) == 1  # one switch for both tables
        assert sum("set_config(" in sql for sql in seen) == 2  # and one switch back
    assert (_count(store, Candidate), _count(store, IterationState)) == (2, 2)
    dangling = [(run, items[0], 1, sha, 0.5, 0.5, 1, [[sha, 0.5]], now) for sha in ["f" * 64]]
    with pytest.raises(DanglingReference, match="iteration_states.*ffff"):
        with store.write(bulk=True) as s:
            insert_tables(s, [(Candidate.__table__, CANDIDATE_COLUMNS, [(run, items[0], 1, shas[0], "pool", 0.5, 1)]),
                              (IterationState.__table__, STATE_COLUMNS, dangling)])
    assert (_count(store, Candidate), _count(store, IterationState)) == (2, 2)  # the whole transaction rolled back


@pytest.mark.postgres
def test_postgres_bulk_writes_hold_the_parents_they_reference_without_row_triggers(pg_url: str) -> None:
    """Written without the server's per-row foreign-key triggers (this role may turn them off), a
    candidate still keeps its text: a concurrent delete of an existing text it references waits for
    the writer (here: times out) instead of leaving the candidate dangling at commit; a text the same
    transaction inserted is invisible to others, so it needs no lock."""
    import psycopg
    from sqlalchemy import create_engine, text

    from capstore.store import open_store

    store = open_store(pg_url)
    run, items, _ = _run_with_items(store, 1)
    with store.write() as s:
        old = put_texts(s, ["stored before"])[0]
    other = create_engine(pg_url)
    seen = _statements(store)
    try:
        with store.write(bulk=True) as s:
            new = put_texts(s, ["written by this transaction"])[0]
            insert_rows(s, Candidate.__table__, CANDIDATE_COLUMNS,
                        [(run, items[0], 0, sha, "pool", 0.5, k + 1) for k, sha in enumerate([old, new])])
            with other.connect() as c, pytest.raises(Exception) as waited:
                c.exec_driver_sql("SET lock_timeout = '300ms'")
                c.execute(text("DELETE FROM texts WHERE sha256 = :s"), {"s": old})
            assert isinstance(waited.value.orig, psycopg.errors.LockNotAvailable)  # type: ignore[attr-defined]
        assert any("'replica'" in sql for sql in seen)  # the COPY ran without the triggers
        locks = [sql for sql in seen if "FOR KEY SHARE" in sql]
        assert len(locks) == 3  # runs, items, texts: one statement each, not one per row
        with store.read() as s:
            assert _count(store, Candidate) == 2
        with other.connect() as c, pytest.raises(IntegrityError, match="candidates"):
            c.execute(text("DELETE FROM texts WHERE sha256 = :s"), {"s": old})  # referenced now
    finally:
        other.dispose()
        store.dispose()


@pytest.mark.postgres
def test_a_postgres_role_that_may_not_turn_off_triggers_keeps_them(pg_url: str) -> None:
    """A role without the privilege to set ``session_replication_role`` writes through the server's
    foreign-key triggers: the same rows, and a dangling reference refused the same way."""
    import uuid

    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    from capstore.store import open_store

    owner = open_store(pg_url)
    run, items, _ = _run_with_items(owner, 1)
    role = f"capstore_writer_{uuid.uuid4().hex[:10]}"
    schema = make_url(pg_url).query["options"].split("%3D")[-1].split("=")[-1]
    admin = create_engine(pg_url)
    with admin.begin() as c:
        c.exec_driver_sql(f'CREATE ROLE "{role}" LOGIN')
        c.exec_driver_sql(f'GRANT USAGE ON SCHEMA "{schema}" TO "{role}"')
        c.exec_driver_sql(f'GRANT ALL ON ALL TABLES IN SCHEMA "{schema}" TO "{role}"')
        c.exec_driver_sql(f'GRANT ALL ON ALL SEQUENCES IN SCHEMA "{schema}" TO "{role}"')
    store = open_store(make_url(pg_url).set(username=role).render_as_string(hide_password=False))
    seen = _statements(store)
    try:
        with store.write(bulk=True) as s:
            sha = put_texts(s, ["by a plain role"])[0]
            insert_rows(s, Candidate.__table__, CANDIDATE_COLUMNS, [(run, items[0], 0, sha, "pool", 0.5, 1)])
        assert _count(store, Candidate) == 1
        with pytest.raises(DanglingReference, match="candidates.*is not present"):
            with store.write(bulk=True) as s:
                insert_rows(s, Candidate.__table__, CANDIDATE_COLUMNS, [(run, items[0], 1, "f" * 64, "pool", 0.5, 1)])
        assert _count(store, Candidate) == 1
        assert any("has_parameter_privilege" in sql or "rolsuper" in sql for sql in seen)  # asked, and told no
        assert not any("'replica'" in sql or "FOR KEY SHARE" in sql for sql in seen)
    finally:
        store.dispose()
        owner.dispose()
        with admin.begin() as c:
            c.exec_driver_sql(f'DROP OWNED BY "{role}"')
            c.exec_driver_sql(f'DROP ROLE "{role}"')
        admin.dispose()


def test_a_captions_first_iteration_is_looked_up_per_item_and_text_across_chunks(store) -> None:  # type: ignore[no-untyped-def]
    run, items, _ = _run_with_items(store, 450)  # more pairs than one query takes
    with store.write() as s:
        shas = put_texts(s, [f"caption of item {i}" for i in range(450)] + ["a text nobody has"])
    # Item i's caption text is a candidate from iteration i % 3 on (and again later); item i + 1 had
    # the same text at iteration 0, which must not count for item i.
    cands = [(run, items[i], it, shas[i], "generated", 0.5, 1) for i in range(450) for it in range(i % 3, 4)]
    cands += [(run, items[i + 1], 0, shas[i], "generated", 0.1, 2) for i in range(449) if i % 3]
    with store.write(bulk=True) as s:
        insert_rows(s, Candidate.__table__, CANDIDATE_COLUMNS, cands)
    pairs = [(items[i], shas[i]) for i in range(450)]
    first = first_candidate_iterations(store, run, pairs)
    assert first == {items[i]: i % 3 for i in range(450)}
    assert first_candidate_iterations(store, run, [(items[1], shas[450])]) == {}  # never a candidate there
    assert first_candidate_iterations(store, run + 1, pairs[:5]) == {}  # another run's
