"""How a worker ends: exit codes (0 done, 1 failed items, 130 Ctrl-C) and a finished_at set once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from capstore.cli.main import cli
from capstore.runs.engine import work
from capstore.store import Store
from capstore.store.schema import Run, WorkItem
from tests.run_helpers import mils_args
from tests.test_runs_resume import _committed_steps_now

CLI = [sys.executable, "-m", "capstore.cli.main"]


def _cli(db: str, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, [*args, "--db", db])
    return result.exit_code, result.output


def _times(store: Store, run_id: int) -> tuple[object, object, str]:
    with store.read() as s:
        run = s.get(Run, run_id)
        return run.started_at, run.finished_at, run.status


def test_finished_at_is_set_once_when_the_run_finishes(demo_store: Store) -> None:
    db = demo_store.url
    code, out = _cli(db, "run", "--method", "fake", "--captioner", "fake:echo", "--limit", "3", "--quiet")
    assert code == 0 and "3/3 items done" in out
    started, finished, status = _times(demo_store, 1)
    with demo_store.read() as s:
        last = max(s.scalars(select(WorkItem.updated_at)))
    assert status == "done" and finished == last  # when the last item finished, not when someone looked
    time.sleep(0.05)
    for args in (("resume", "1", "--quiet"), ("worker", "1", "--quiet")):
        code, out = _cli(db, *args)
        assert code == 0 and "3/3 items done" in out, out
        assert _times(demo_store, 1) == (started, finished, "done"), args
    summary = work(demo_store, 1, progress=False, resume=True)  # what `capstore demo` does again on each call
    assert summary.status == "done" and _times(demo_store, 1) == (started, finished, "done")


def test_ctrl_c_gives_the_items_back_and_exits_130(demo_store: Store, tiny_models, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    db = demo_store.url.replace("sqlite:///", "")
    args = mils_args(tmp_path, tiny_models.specs["scorer"], generator="fake:slow", iterations=3,
                     extra=("--limit", "12"))
    proc = subprocess.Popen([*CLI, *args, "--db", db], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and _committed_steps_now(db) < 2:
        time.sleep(0.01)
    assert proc.poll() is None, proc.communicate()
    os.kill(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, (out, err)
    assert "interrupted: held items given back; continue with `capstore resume 1`" in out
    assert "Traceback" not in err
    with demo_store.read() as s:
        assert s.get(Run, 1).status == "interrupted"
        leased = s.scalars(select(WorkItem.id).where(WorkItem.status == "leased")).all()
    assert leased == []  # given back at once, not left for the lease to run out


def test_a_run_with_failed_items_exits_1_naming_the_first_error(demo_store: Store) -> None:
    code, out = _cli(demo_store.url, "run", "--method", "fake", "--captioner", "fake:echo", "--limit", "2", "--quiet")
    assert code == 0
    with demo_store.write() as s:  # a run whose second item failed for good (as after three failed calls)
        s.execute(WorkItem.__table__.update().where(WorkItem.run_id == 1, WorkItem.item_id == 2)
                  .values(status="failed"))
        from capstore.store.schema import ErrorEvent

        s.add(ErrorEvent(run_id=1, item_id=2, stage="caption", kind="http_500", message="server error", attempt=3))
        s.get(Run, 1).status = "running"
    code, out = _cli(demo_store.url, "resume", "1", "--quiet")
    assert code == 1, out
    assert "run 1: done; 1/2 items done, 1 failed" in out
    assert "1 of 2 items failed; first error: item demo-01, caption: http_500: server error" in out


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the swallowed interrupt, printed
def test_ctrl_c_swallowed_by_a_finalizer_still_stops_the_run(demo_store: Store, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A Ctrl-C that lands while Python runs a finalizer (a ``__del__``, a weakref callback: SQLAlchemy
    has many) raises its KeyboardInterrupt there, and Python only prints it ("Exception ignored"):
    the run went on to the end and exited 0. The interrupt is remembered and the worker stops at the
    next step as after any Ctrl-C: exit 130, the held items given back."""
    from capstore.backends.fake import FakeCaptioner

    class Finalizer:
        def __del__(self) -> None:
            signal.raise_signal(signal.SIGINT)  # its KeyboardInterrupt is raised in here, and swallowed

    real = FakeCaptioner.caption
    calls = []

    def caption(self, images, seeds, ctx=None):  # type: ignore[no-untyped-def]
        calls.append(len(images))
        if len(calls) == 1:
            Finalizer()  # collected at once
        return real(self, images, seeds, *([ctx] if ctx is not None else []))

    monkeypatch.setattr(FakeCaptioner, "caption", caption)
    code, out = _cli(demo_store.url, "run", "--method", "fake", "--captioner", "fake:echo", "--limit", "6",
                     "--batch-images", "1")
    assert code == 130, out
    assert "interrupted: held items given back" in out
    with demo_store.read() as s:
        assert s.get(Run, 1).status == "interrupted"
        statuses = s.scalars(select(WorkItem.status)).all()
    assert "leased" not in statuses and statuses.count("done") <= 2, statuses  # stopped at the next step
    assert len(calls) <= 2
