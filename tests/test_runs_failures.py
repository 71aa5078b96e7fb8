"""A backend that cannot load stops the run cleanly: one line, items given back, run resumable."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from capstore.cli.main import cli
from capstore.errors import BackendError
from capstore.runs import RunConfig, create_run
from capstore.runs.engine import work
from capstore.store.schema import Run, WorkItem
from tests.run_helpers import mils_args


def test_unloadable_scorer_is_one_line(demo_store, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    db = demo_store.url.replace("sqlite:///", "")
    args = mils_args(tmp_path, "open_clip:no-such-model-anywhere", extra=("--limit", "3"))
    result = CliRunner().invoke(cli, [*args, "--db", db])
    assert result.exit_code == 2
    assert "cannot load open_clip model" in result.output and "Traceback" not in result.output


def test_a_backend_failing_to_load_mid_run_gives_the_items_back(demo_store) -> None:  # type: ignore[no-untyped-def]
    """Weights that pass the up-front check can still fail to load on the worker (corrupt file, no
    memory): the claimed items go back at once, not after the lease, and the run is resumable."""
    run_id = create_run(demo_store, RunConfig(method="fake", dataset="demo", captioner="fake:echo", limit=3))

    class Broken:
        def captioner(self):  # type: ignore[no-untyped-def]
            raise BackendError("cannot load fake model fake:echo: weights file is truncated")

        scorer = generator = captioner

    with pytest.raises(BackendError, match="truncated"):
        work(demo_store, run_id, progress=False, backends=Broken())  # type: ignore[arg-type]
    with demo_store.read() as s:
        assert s.get(Run, run_id).status == "interrupted"
        items = s.execute(select(WorkItem.status, WorkItem.lease_owner)).all()
    assert items == [("pending", None)] * 3  # not left leased for the lease's lifetime
