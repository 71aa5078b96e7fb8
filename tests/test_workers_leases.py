"""Leases renew themselves while a worker lives; a dead worker's items are taken over within one
lease, by a worker that waits for them (no ``resume`` needed, on any host)."""

from __future__ import annotations

import time

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from capstore.cli.main import cli
from capstore.datasets import make_demo
from capstore.errors import InputError
from capstore.runs import RunConfig, create_run
from capstore.runs.heartbeat import Heartbeat
from capstore.runs.leases import claim, lease_seconds, open_work
from capstore.runs.status import run_status
from capstore.runs.steps import LeaseLost, Step, commit_step
from capstore.store import Store
from capstore.store.schema import Caption, Run, WorkItem

LEASE = 1.0
DEAD = "another-host:4242:deadbeef"  # a worker on another machine: resume could never free its leases


def _baseline_run(store: Store, items: int = 4) -> int:
    make_demo(store)
    return create_run(store, RunConfig(method="fake", dataset="demo", captioner="fake:echo", limit=items,
                                       batch_images=items))


def test_heartbeat_keeps_a_lease_that_dies_with_its_worker(store: Store) -> None:
    run_id = _baseline_run(store)
    held = claim(store, run_id, "me:1:alive", 4, LEASE)
    assert len(held) == 4
    with Heartbeat(store, run_id, "me:1:alive", LEASE, interval=LEASE / 5) as beat:
        time.sleep(LEASE * 1.8)  # far past the first expiry: only the beats keep the items
        assert claim(store, run_id, "other:2:thief", 4, LEASE) == []
        assert beat.beats >= 3
        step = Step(held[0][0], held[0][1], 0, [("a caption", "baseline", None)], [], final=True,
                    caption=("a caption", None, 0))
        commit_step(store, run_id, "me:1:alive", step, LEASE)  # accepted: the lease is still ours
    time.sleep(LEASE * 1.2)  # the beats stopped (the worker "died"): its leases run out
    taken = claim(store, run_id, "other:2:thief", 4, LEASE)
    assert sorted(wid for wid, _, _ in taken) == sorted(wid for wid, _, _ in held[1:])
    late = Step(held[1][0], held[1][1], 0, [("too late", "baseline", None)], [], final=True,
                caption=("too late", None, 0))
    with pytest.raises(LeaseLost):  # the dead worker's late commit is refused
        commit_step(store, run_id, "me:1:alive", late, LEASE)


def test_a_worker_waits_for_a_dead_workers_items_and_takes_them_over(store: Store) -> None:
    run_id = _baseline_run(store)
    assert len(claim(store, run_id, DEAD, 4, 1.5)) == 4  # then it dies: no heartbeat
    db = store.url
    quick = CliRunner().invoke(cli, ["worker", str(run_id), "--no-wait", "--quiet", "--db", db])
    assert quick.exit_code == 0, quick.output
    assert "0/4 items done" in quick.output and "4 items are still held by other workers" in quick.output
    time.sleep(1.6)
    left = open_work(store, run_id)
    assert (left.pending, left.expired, left.held) == (0, 4, 0)
    status = run_status(store, run_id)
    assert status.expired == 4 and "4 expired" in status.describe()

    # Now a worker that waits: the leases run out while it waits (claimed again with 1.5 s), and it
    # finishes the run without `resume`.
    assert len(claim(store, run_id, DEAD, 4, 1.5)) == 4
    start = time.monotonic()
    result = CliRunner().invoke(cli, ["worker", str(run_id), "--quiet", "--db", db])
    waited = time.monotonic() - start
    assert result.exit_code == 0, result.output
    assert "run 1: done; 4/4 items done" in result.output
    assert 1.0 <= waited < 1.5 + 5.0  # it waited for the expiry, then took the items at once
    with store.read() as s:
        assert s.scalar(select(func.count()).select_from(Caption).where(Caption.run_id == run_id)) == 4
        assert set(s.scalars(select(WorkItem.attempts))) == {3}  # the dead worker's two claims, then ours
        assert s.get(Run, run_id).status == "done"


def test_lease_length_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CAPSTORE_LEASE_SECONDS", raising=False)
    assert lease_seconds(None) == 60 and lease_seconds(600) == 600
    assert RunConfig(method="mils", dataset="d").lease_seconds == 60
    monkeypatch.setenv("CAPSTORE_LEASE_SECONDS", "2.5")
    assert lease_seconds(600) == 2.5
    monkeypatch.setenv("CAPSTORE_LEASE_SECONDS", "86400")
    assert lease_seconds(None) == 86400  # a day at most: longer overflows the store's datetimes
    for bad in ("0", "-3", "nan", "inf", "soon", "1e12", "86401"):
        monkeypatch.setenv("CAPSTORE_LEASE_SECONDS", bad)
        with pytest.raises(InputError, match="CAPSTORE_LEASE_SECONDS"):
            lease_seconds(None)


def test_stopping_does_not_wait_for_ever_on_a_beat_hung_on_the_store(monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    from capstore.runs import heartbeat

    hung = threading.Event()
    release = threading.Event()

    def renew_that_hangs(*_args: object) -> None:  # as a beat on an unreachable store's TCP connection
        hung.set()
        release.wait()

    monkeypatch.setattr(heartbeat, "renew", renew_that_hangs)
    beat = Heartbeat(None, 1, "me:1:alive", 1.0, interval=0.01)  # type: ignore[arg-type]
    beat.__enter__()
    assert hung.wait(30)
    stopper = threading.Thread(target=beat.stop, daemon=True)
    stopper.start()
    stopper.join(60)  # stop() gives up after interval + 5 s; before, it waited for the beat for ever
    try:
        assert not stopper.is_alive()
    finally:
        release.set()
