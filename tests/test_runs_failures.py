"""A backend that cannot load stops the run cleanly: one line, items given back, run resumable."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner
from sqlalchemy import select

from capstore.cli.main import cli
from capstore.store.schema import Run, WorkItem
from tests.run_helpers import mils_args


def test_unloadable_scorer_gives_the_items_back(demo_store, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    db = demo_store.url.replace("sqlite:///", "")
    args = mils_args(tmp_path, "open_clip:no-such-model-anywhere", extra=("--limit", "3"))
    result = CliRunner().invoke(cli, [*args, "--db", db])
    assert result.exit_code == 2
    assert "cannot load open_clip model" in result.output and "Traceback" not in result.output
    with demo_store.read() as s:
        assert s.scalar(select(Run.status)) == "interrupted"
        work = s.execute(select(WorkItem.status, WorkItem.lease_owner)).all()
    assert work == [("pending", None)] * 3  # not left leased for the lease's lifetime
