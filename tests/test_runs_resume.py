"""A SIGKILLed run resumes to exactly the uninterrupted result; several workers share a run safely."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from capstore.datasets import make_demo
from capstore.runs import RunConfig, create_run
from capstore.store import open_store
from capstore.store.schema import Caption, Candidate, IterationState, Run, TextSet, UsageEvent, WorkItem
from tests.run_helpers import assert_same_results, mils_args, snapshot

CLI = [sys.executable, "-m", "capstore.cli.main"]
ITERATIONS = 3
N_ITEMS = 12


def _args(tmp_path: Path, scorer: str, db: str) -> list[str]:
    return [*mils_args(tmp_path, scorer, iterations=ITERATIONS, extra=("--limit", str(N_ITEMS))), "--db", db]


def _steps(db: str) -> int:
    store = open_store(db)
    try:
        with store.read() as s:
            return int(s.scalar(select(func.count()).select_from(IterationState)) or 0)
    finally:
        store.dispose()


def _committed_steps_now(db: str) -> int:
    """A cheap poll (plain sqlite3, read-only): a batch's iteration commits are milliseconds apart."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return int(con.execute("SELECT count(*) FROM iteration_states").fetchone()[0])
    except sqlite3.OperationalError:  # the table is not there yet
        return 0
    finally:
        con.close()


def _kill_after(cmd: list[str], db: str, steps: int, timeout: float = 120) -> None:
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if Path(db).exists() and _committed_steps_now(db) >= steps:
            break
        time.sleep(0.005)
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_models):  # type: ignore[no-untyped-def]
    """An uninterrupted run in a store of its own (no shared caches), made once for the module."""
    folder = tmp_path_factory.mktemp("reference")
    db = str(folder / "ref.db")
    make_demo(open_store(db))
    subprocess.run([*CLI, *_args(folder, tiny_models.specs["scorer"], db)], check=True, capture_output=True)
    return snapshot(open_store(db), 1)


# Workers take 4 images a batch through all iterations, committing 4 steps at a time: kill in the
# first commit of the first batch, at the end of the first batch, and after the third batch's first iteration.
@pytest.mark.parametrize("kill_at", [1, 4 * (ITERATIONS + 1) - 1, 2 * 4 * (ITERATIONS + 1) + 1])
def test_sigkill_then_resume_equals_uninterrupted(tmp_path: Path, tiny_models, reference, kill_at: int) -> None:  # type: ignore[no-untyped-def]
    db = str(tmp_path / "store.db")
    make_demo(open_store(db))
    _kill_after([*CLI, *_args(tmp_path, tiny_models.specs["scorer"], db)], db, kill_at)
    committed = _steps(db)
    assert 0 < committed < N_ITEMS * (ITERATIONS + 1), "the kill must land mid-run"
    store = open_store(db)
    with store.read() as s:
        before = {(c.item_id, c.iteration, c.text_sha): c.id for c in s.scalars(select(Candidate))}
    resumed = subprocess.run([*CLI, "resume", "1", "--quiet", "--db", db], capture_output=True, text=True, check=True)
    assert f"{N_ITEMS}/{N_ITEMS} items done" in resumed.stdout
    with store.read() as s:
        after = {(c.item_id, c.iteration, c.text_sha): c.id for c in s.scalars(select(Candidate))}
    assert all(after[k] == v for k, v in before.items())  # nothing committed was lost or redone
    assert_same_results(snapshot(store, 1), reference)


def test_sigkill_then_a_worker_takes_over_without_resume(tmp_path: Path, tiny_models, reference,  # type: ignore[no-untyped-def]
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """No `resume`: a plain `capstore worker` finds the dead process's items leased, waits for the
    leases (2 s, renewed by the dead process's heartbeat until the kill) to run out, takes them over
    and finishes the run exactly as an uninterrupted one."""
    monkeypatch.setenv("CAPSTORE_LEASE_SECONDS", "2")  # both processes inherit it
    db = str(tmp_path / "store.db")
    make_demo(open_store(db))
    _kill_after([*CLI, *_args(tmp_path, tiny_models.specs["scorer"], db)], db, 4 * (ITERATIONS + 1) + 1)
    store = open_store(db)
    with store.read() as s:
        assert s.scalar(select(func.count()).select_from(WorkItem).where(WorkItem.status == "leased")) > 0
    taken = subprocess.run([*CLI, "worker", "1", "--quiet", "--db", db], capture_output=True, text=True, timeout=300)
    assert taken.returncode == 0, taken.stderr
    assert f"{N_ITEMS}/{N_ITEMS} items done" in taken.stdout
    assert_same_results(snapshot(store, 1), reference)
    store.dispose()


def _worker_run(db: str, tmp_path: Path, scorer: str, workers: int) -> None:
    from capstore.methods.demo_assets import write_demo_assets

    store = open_store(db)
    make_demo(store)
    pool, prompt = write_demo_assets(tmp_path / "assets")
    cfg = RunConfig(method="mils", dataset="demo", scorer=scorer, generator="fake:slow", iterations=2, keep=5,
                    requested=8, batch_images=2)
    run_id = create_run(store, cfg, pool_file=str(pool), prompt_file=str(prompt))
    procs = [subprocess.Popen([*CLI, "worker", str(run_id), "--quiet", "--db", db], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(workers)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    with store.read() as s:
        assert s.scalars(select(WorkItem.status).distinct()).all() == ["done"]
        assert s.scalar(select(func.count()).select_from(Caption)) == 24
        assert s.scalar(select(func.count()).select_from(IterationState)) == 24 * 3
        per_item = s.execute(select(IterationState.item_id, func.count()).group_by(IterationState.item_id)).all()
        assert {n for _, n in per_item} == {3}
        workers_seen = s.scalar(select(func.count(func.distinct(UsageEvent.worker))).where(UsageEvent.stage == "generate"))
        assert workers_seen >= 2, "the work was shared"
        # The pool was encoded once for the store: one worker computed it, the others read the cache.
        pool = s.execute(select(UsageEvent.items, UsageEvent.cached, UsageEvent.calls)
                         .where(UsageEvent.stage == "encode_pool")).all()
        pool_size = s.scalar(select(TextSet.size).where(TextSet.sha256 == s.get(Run, run_id).config["pool_sha"]))
        assert sum(e.items - e.cached for e in pool) == pool_size and [e.calls > 0 for e in pool].count(True) == 1
    store.dispose()


@pytest.mark.parametrize("workers", [2, 3])
def test_workers_on_sqlite_do_every_item_once(tmp_path: Path, tiny_models, workers: int) -> None:  # type: ignore[no-untyped-def]
    _worker_run(str(tmp_path / "store.db"), tmp_path, tiny_models.specs["scorer"], workers)


@pytest.mark.postgres
@pytest.mark.parametrize("workers", [2, 3])
def test_workers_on_postgresql_do_every_item_once(pg_url: str, tmp_path: Path, tiny_models, workers: int) -> None:  # type: ignore[no-untyped-def]
    _worker_run(pg_url, tmp_path, tiny_models.specs["scorer"], workers)
