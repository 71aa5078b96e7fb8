"""``capstore runs delete`` removes a run from every table at once; ``capstore gc`` removes what
failed starts leave and content nothing references, keeping what other runs share."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
from click.testing import CliRunner
from sqlalchemy import Table, func, select, text, update

from capstore.backends.caching import put_embeddings, put_scores
from capstore.cli.main import cli
from capstore.datasets import make_demo
from capstore.methods.demo_assets import write_demo_assets
from capstore.runs import RunConfig, create_run
from capstore.runs.cleanup import RUN_TABLES
from capstore.store import Store
from capstore.store.content import sha256_text
from capstore.store.schema import (Base, Candidate, CandidateEval, CandidateEvalValue, EmbeddingCache, Image,
                                   ImageBlob, Item, IterationState, MetricValue, Model, Run, ScoreSet, Text, TextSet,
                                   TextSetMember, WorkItem, utcnow)


def _cli(db: str, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, [*args, "--db", db])
    return result.exit_code, result.output


def _counts(store: Store) -> dict[str, int]:
    with store.read() as s:
        return {t.name: s.scalar(select(func.count()).select_from(t)) for t in Base.metadata.sorted_tables}


def _run_tables() -> list[Table]:
    return [t for t in Base.metadata.sorted_tables if t.name != "runs"
            and any(fk.column.table.name == "runs" for fk in t.foreign_keys)]


def _referenced_texts(store: Store) -> set[str]:
    with store.read() as s:
        shas = set(s.scalars(text('SELECT text_sha FROM "references" UNION SELECT text_sha FROM text_set_members '
                                  "UNION SELECT text_sha FROM candidates UNION SELECT text_sha FROM captions")))
        shas |= set(s.scalars(select(IterationState.best_text_sha)))
        shas |= {sha for kept in s.scalars(select(IterationState.kept)) for sha, _ in kept}
    return shas - {None}


def _failed_start(store: Store, scorer: str, pool: Path, prompt: Path) -> int:
    """A run created (its pool stored) whose process died before committing anything."""
    run_id = create_run(store, RunConfig(method="mils", dataset="demo", scorer=scorer, generator="fake:mutate",
                                         limit=2), pool_file=str(pool), prompt_file=str(prompt))
    with store.write() as s:
        s.execute(update(Run).where(Run.id == run_id).values(status="interrupted"))
    return run_id


def test_every_table_that_references_runs_is_cleaned() -> None:
    assert {t.name for t in _run_tables()} == {m.__table__.name for m in RUN_TABLES}  # type: ignore[attr-defined]


def test_delete_runs_and_collect_garbage(store: Store, tiny_models, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    db = store.url
    make_demo(store)
    pool, prompt = write_demo_assets(tmp_path / "assets")
    debris_pool = tmp_path / "debris-pool.txt"
    debris_pool.write_text("a line only a failed start used\nanother debris line\n")
    mils = ["run", "--method", "mils", "--generator", "fake:mutate", "--prompt", str(prompt), "--keep", "3",
            "--requested", "4", "--quiet"]
    scorer = tiny_models.specs["scorer"]
    assert _cli(db, *mils, "--scorer", scorer, "--pool", str(pool), "--iterations", "1", "--limit", "2")[0] == 0  # 1
    assert _cli(db, "run", "--method", "fake", "--captioner", "fake:echo", "--limit", "2", "--quiet")[0] == 0  # 2
    _failed_start(store, scorer, debris_pool, prompt)  # 3
    assert _cli(db, "run", "--method", "fake", "--captioner", "fake:echo", "--limit", "1", "--quiet")[0] == 0  # 4
    assert _cli(db, *mils, "--scorer", scorer, "--pool", str(pool), "--iterations", "0", "--limit", "1")[0] == 0  # 5
    with store.write() as s:
        s.execute(update(Run).where(Run.id == 4).values(parent_run_id=2))  # as --init-from 2 records it
        cand = s.scalars(select(Candidate).where(Candidate.run_id == 1)).first()
        s.add_all([MetricValue(run_id=1, metric="CIDEr", scope="corpus", subject="corpus", value=0.5, implementation="t"),
                   MetricValue(run_id=1, metric="CLIPScore", scope="candidate", subject=f"candidate:{cand.id}",
                               item_id=cand.item_id, candidate_id=cand.id, value=0.7, implementation="t"),
                   CandidateEval(id=7, run_id=1, cider_implementation="t")])
        s.flush()
        s.add(CandidateEvalValue(eval_id=7, candidate_id=cand.id, cider=0.25))
        run1_texts = set(s.scalars(select(Candidate.text_sha).where(Candidate.run_id == 1, Candidate.origin == "generated")))
        pool_sha = s.get(Run, 1).config["pool_sha"]
        pool_texts = set(s.scalars(select(TextSetMember.text_sha).where(TextSetMember.set_sha == pool_sha)))
        scorer_id = s.scalar(select(Model.id).where(Model.kind == "scorer"))
        s.add_all([Image(sha256="f" * 64, size_bytes=3), ImageBlob(image_sha="f" * 64, data=b"abc")])  # an orphan
    put_embeddings(store, scorer_id, "image", ["f" * 64], np.ones((1, 4), dtype=np.float32))
    assert run1_texts and not run1_texts & pool_texts
    with store.read() as s:
        image = s.scalar(select(Item.image_sha).where(Item.image_sha.is_not(None)))
        run1_sets = s.scalar(select(func.count()).select_from(ScoreSet))
    assert run1_sets  # run 1's generated candidates' scores
    pool_text, run1_text = min(pool_texts), min(run1_texts)
    put_scores(store, scorer_id, {("f" * 64, pool_text): 0.5})  # the orphan image's
    put_scores(store, scorer_id, {(image, pool_text): 0.25, (image, run1_text): 0.75})  # one text will stay
    with store.write() as s:  # run 5's item held by a live worker (as while it is extended)
        s.execute(update(WorkItem).where(WorkItem.run_id == 5).values(
            status="leased", lease_owner="elsewhere:1:alive", lease_expires_at=utcnow() + timedelta(minutes=5)))

    before = _counts(store)
    for args, message in [(("runs", "delete", "1"), "not deleting run(s) 1 without --yes"),
                          (("runs", "delete", "2", "--yes"), "run 2 seeded run 4 (--init-from)"),
                          (("runs", "delete", "99", "--yes"), "no run 99"),
                          (("runs", "delete", "5", "--yes"), "run 5 has 1 items leased by live workers")]:
        code, out = _cli(db, *args)
        assert code == 2 and out.startswith(f"Error: {message}") and out.count("\n") == 1, (args, out)
    assert _counts(store) == before  # refused: nothing deleted

    code, out = _cli(db, "runs", "delete", "1", "--yes")
    assert code == 0 and out.startswith("deleted run(s) 1: "), out
    after = _counts(store)
    with store.read() as s:
        for table in _run_tables():  # every table that references runs, without a row of run 1
            assert s.scalar(select(func.count()).select_from(table).where(table.c.run_id == 1)) == 0, table.name
        assert s.get(Run, 1) is None and s.get(Run, 2) is not None
        assert s.scalar(select(func.count()).select_from(MetricValue)) == 0
        assert s.scalar(select(func.count()).select_from(CandidateEvalValue)) == 0
    for shared in ("texts", "images", "embedding_cache", "generation_cache", "text_sets", "models"):
        assert after[shared] == before[shared], shared  # content and caches stay until gc

    with store.write() as s:  # the worker finished
        s.execute(update(WorkItem).where(WorkItem.run_id == 5).values(status="done", lease_owner=None,
                                                                      lease_expires_at=None))
    code, out = _cli(db, "gc", "--dry-run", "--older-than", "0")
    assert code == 0 and out.startswith("gc would remove: debris runs: 3;"), out
    assert _counts(store) == after  # a dry run removes nothing

    code, out = _cli(db, "gc", "--older-than", "0")
    assert code == 0 and out.startswith("gc removed: debris runs: 3;"), out
    with store.read() as s:
        assert sorted(s.scalars(select(Run.id))) == [2, 4, 5]
        assert sorted(s.scalars(select(TextSet.name))) == [pool.name]  # the failed start's pool went
        texts = set(s.scalars(select(Text.sha256)))
        text_embeddings = set(s.scalars(select(EmbeddingCache.content_sha).where(EmbeddingCache.content_kind == "text")))
        assert s.get(Image, "f" * 64) is None and s.get(ImageBlob, "f" * 64) is None
        assert s.scalar(select(func.count()).select_from(EmbeddingCache).where(EmbeddingCache.content_sha == "f" * 64)) == 0
    assert texts == _referenced_texts(store)  # every text left is referenced, and every referenced one is there
    assert not run1_texts & texts and not run1_texts & text_embeddings  # the deleted run's texts and their embeddings
    assert sha256_text("another debris line") not in texts
    assert pool_texts <= texts and pool_texts <= text_embeddings  # run 5 still uses the pool: it and its cache stay
    assert _counts(store)["images"] == after["images"] - 1 and _counts(store)["references"] == after["references"]
    with store.read() as s:  # run 1's sets went with its texts, the orphan image's with it; the mixed one stays whole
        assert s.execute(select(ScoreSet.image_sha, ScoreSet.size)).all() == [(image, 2)]

    code, out = _cli(db, "gc", "--older-than", "0")
    assert code == 0 and out.strip() == "gc removed: debris runs: none; nothing else", out
    _failed_start(store, scorer, debris_pool, prompt)
    code, out = _cli(db, "gc", "--dry-run")  # a failed start of a moment ago is not debris yet
    assert code == 0 and out.startswith("gc would remove: debris runs: none;"), out


def test_a_run_that_fails_to_be_created_leaves_no_pool_behind(store: Store, tiny_models, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                              monkeypatch) -> None:
    """The pool goes in with its run, in one transaction: gc can never see the pool without the run."""
    import pytest

    from capstore.runs import create

    make_demo(store)
    _, prompt = write_demo_assets(tmp_path / "assets")
    pool = tmp_path / "pool.txt"
    pool.write_text("a line of a run that never was\n")

    def fail() -> None:
        raise RuntimeError("the creating process died here")

    monkeypatch.setattr(create, "utcnow", fail)  # while writing the run's work items, after the pool's rows
    with pytest.raises(RuntimeError, match="died here"):
        create_run(store, RunConfig(method="mils", dataset="demo", scorer=tiny_models.specs["scorer"],
                                    generator="fake:mutate", limit=2), pool_file=str(pool), prompt_file=str(prompt))
    with store.read() as s:
        assert s.scalar(select(func.count()).select_from(Run)) == 0
        assert s.scalar(select(func.count()).select_from(TextSet)) == 0
        assert s.get(Text, sha256_text("a line of a run that never was")) is None


def test_gc_keeps_a_debris_run_that_a_worker_takes_meanwhile(pg_url: str) -> None:  # type: ignore[no-untyped-def]
    """On PostgreSQL: a worker leases an item of an old interrupted run (and checks the run's key, as its
    commit's foreign keys do) while gc decides; gc waits for it, sees the live lease and keeps the run."""
    import threading
    import time as clock

    from sqlalchemy import create_engine

    from capstore.runs.cleanup import collect_garbage
    from capstore.store import open_store

    store = open_store(pg_url)
    make_demo(store)
    run_id = create_run(store, RunConfig(method="fake", dataset="demo", captioner="fake:echo", limit=2))
    with store.write() as s:
        s.execute(update(Run).where(Run.id == run_id).values(status="interrupted"))
    worker = create_engine(pg_url).connect()
    watcher = create_engine(pg_url)
    try:
        tx = worker.begin()
        worker.execute(update(WorkItem).where(WorkItem.run_id == run_id).values(
            status="leased", lease_owner="w:1:alive", lease_expires_at=utcnow() + timedelta(minutes=5)))
        worker.execute(text("SELECT id FROM runs WHERE id = :id FOR KEY SHARE"), {"id": run_id})
        reports: list = []
        gc = threading.Thread(target=lambda: reports.append(collect_garbage(store, older_than=0)))
        gc.start()
        deadline = clock.monotonic() + 60
        with watcher.connect() as conn:  # until gc waits on the worker's locks (it cannot see the lease yet)
            while not conn.scalar(text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                                       "AND datname = current_database()")):
                assert clock.monotonic() < deadline and gc.is_alive(), "gc never waited for the worker"
                clock.sleep(0.01)
        tx.commit()
        gc.join(60)
        assert not gc.is_alive() and reports and reports[0].runs == []
        with store.read() as s:
            assert s.get(Run, run_id) is not None
            assert s.scalar(select(func.count()).select_from(WorkItem).where(WorkItem.run_id == run_id)) == 2
    finally:
        worker.close()
        watcher.dispose()
        store.dispose()
