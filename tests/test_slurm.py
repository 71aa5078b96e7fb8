"""``capstore slurm``: the sbatch job-array script renders, and its tasks finish a run.

There is no SLURM here: the script itself is run by bash as two local processes, as two array
tasks would run it (``#SBATCH`` lines are comments to bash).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from capstore.cli.main import cli
from capstore.datasets import make_demo
from capstore.runs import RunConfig, create_run
from capstore.store import open_store
from capstore.store.schema import Caption, Run, WorkItem

ITEMS = 24


@pytest.mark.postgres
def test_the_script_renders_and_two_of_its_tasks_finish_the_run(pg_url: str, tmp_path: Path) -> None:
    store = open_store(pg_url)
    make_demo(store)
    run_id = create_run(store, RunConfig(method="fake", dataset="demo", captioner="fake:echo", batch_images=2))
    script = tmp_path / "run.sbatch"
    result = CliRunner().invoke(cli, ["slurm", str(run_id), "--array", "2", "--time", "1-12:00:00", "--partition",
                                      "gpu", "--out", str(script), "--db", pg_url])
    assert result.exit_code == 0, result.output
    assert result.output == f"wrote {script}: submit it with `sbatch {script}`\n"
    text = script.read_text()
    lines = text.splitlines()
    assert lines[0] == "#!/bin/bash"
    assert [line for line in lines if line.startswith("#SBATCH")] == [
        f"#SBATCH --job-name=capstore-run-{run_id}", "#SBATCH --array=0-1", "#SBATCH --time=1-12:00:00",
        f"#SBATCH --output=capstore-run-{run_id}-%A_%a.out", "#SBATCH --gres=gpu:1", "#SBATCH --partition=gpu"]
    assert lines[-1].startswith("exec ") and lines[-1].endswith(f" worker {run_id} --quiet")
    assert "# NOTE: the store's URL names this machine (127.0.0.1)" in text  # the test server's URL
    stdout = CliRunner().invoke(cli, ["slurm", str(run_id), "--array", "2", "--time", "1-12:00:00", "--partition",
                                      "gpu", "--db", pg_url])
    assert stdout.exit_code == 0 and stdout.output == text  # the same script on stdout without --out

    env = {k: v for k, v in os.environ.items() if k != "CAPSTORE_DB"}  # the script names the store itself
    tasks = [subprocess.Popen(["bash", str(script)], env={**env, "SLURM_ARRAY_TASK_ID": str(i)}, cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    outs = [t.communicate(timeout=300) for t in tasks]
    assert [t.returncode for t in tasks] == [0, 0], outs
    for i, (out, _) in enumerate(outs):
        assert out.startswith(f"capstore run {run_id}: array task {i} on ")
        assert f"run {run_id}: done; {ITEMS}/{ITEMS} items done" in out
    with store.read() as s:
        assert s.scalars(select(WorkItem.status).where(WorkItem.run_id == run_id).distinct()).all() == ["done"]
        assert s.scalar(select(func.count()).select_from(Caption).where(Caption.run_id == run_id)) == ITEMS
        assert s.get(Run, run_id).status == "done"
    store.dispose()


@pytest.mark.postgres
def test_a_password_is_never_written_into_the_script(pg_url: str) -> None:
    store = open_store(pg_url)
    make_demo(store)
    run_id = create_run(store, RunConfig(method="fake", dataset="demo", captioner="fake:echo"))
    secret = pg_url.replace("postgres@", "postgres:s3cret-pw@")
    from capstore.runs.slurm import slurm_script

    store.url = secret  # as if opened with a password (the test server trusts any)
    text = slurm_script(store, run_id, 4, gpus=0)
    assert "s3cret-pw" not in text and "--gres" not in text
    assert '"${CAPSTORE_DB:?export CAPSTORE_DB=<the store URL> before sbatch' in text
    store.dispose()


@pytest.mark.parametrize("args, message", [
    (["--array", "0"], "--array 0: expected 1 to 1,000 tasks"),
    (["--array", "2", "--time", "4h"], "--time '4h': expected SLURM's MINUTES"),
    (["--array", "2", "--gpus", "-1"], "--gpus -1: expected 0 to 64"),
    (["--array", "2", "--partition", "gpu\n#SBATCH --x"], "--partition 'gpu\\n#SBATCH --x': expected a partition name"),
])
@pytest.mark.postgres
def test_bad_options_are_refused_in_one_line(pg_url: str, args: list[str], message: str) -> None:
    store = open_store(pg_url)
    make_demo(store)
    create_run(store, RunConfig(method="fake", dataset="demo", captioner="fake:echo"))
    result = CliRunner().invoke(cli, ["slurm", "1", *args, "--db", pg_url])
    assert result.exit_code == 2 and result.output.startswith(f"Error: {message}"), result.output
    assert result.output.count("\n") == 1
    store.dispose()


def test_a_sqlite_store_is_refused(tmp_path: Path) -> None:
    db = str(tmp_path / "store.db")
    store = open_store(db)
    make_demo(store)
    create_run(store, RunConfig(method="fake", dataset="demo", captioner="fake:echo"))
    result = CliRunner().invoke(cli, ["slurm", "1", "--array", "2", "--db", db])
    assert result.exit_code == 2 and result.output.startswith(f"Error: a SQLite store ({db}) lives on one machine")
    assert "PostgreSQL" in result.output and result.output.count("\n") == 1
    store.dispose()


@pytest.mark.postgres
def test_an_unknown_run_is_refused(pg_url: str) -> None:
    open_store(pg_url).dispose()
    result = CliRunner().invoke(cli, ["slurm", "9", "--array", "2", "--db", pg_url])
    assert result.exit_code == 2 and result.output == "Error: no run 9 in this store (see `capstore runs list`)\n"
