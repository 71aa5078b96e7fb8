"""Runs on Ray: N actors, each the one worker loop, with the store's leases as the only coordination.

A local Ray (2 CPUs, no dashboard) is started once for the module and shut down after it; the
actors use the tiny CLIP scorer and the scripted ``fake:slow`` generator (0.1 s an answer, so that
both actors hold batches at once). Skipped only when ``ray`` is not installed (the ``dev`` extra has it).
"""

from __future__ import annotations

import _thread
import importlib.util
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from capstore.cli.main import cli
from capstore.datasets import make_demo
from capstore.methods.demo_assets import write_demo_assets
from capstore.runs import RunConfig, create_run
from capstore.runs.executors.ray import is_local_address
from capstore.store import Store, open_store
from capstore.store.schema import IterationState, Run, UsageEvent, WorkItem
from tests.run_helpers import assert_same_results, mils_args, snapshot

needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                               reason="ray is not installed (pip install 'capstore[ray]' or '.[dev]')")

ITEMS, ITERATIONS = 16, 2
STEPS = ITEMS * (ITERATIONS + 1)


@pytest.fixture(scope="module")
def local_ray() -> Iterator[Any]:
    """One local Ray for the module's Ray tests: the executor uses it instead of starting its own."""
    import logging

    import ray

    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=100 * 2**20, logging_level=logging.WARNING)
    yield ray
    ray.shutdown()


def _args(tmp_path: Path, scorer: str, *extra: str) -> list[str]:
    return mils_args(tmp_path, scorer, generator="fake:slow", iterations=ITERATIONS,
                     extra=("--limit", str(ITEMS), *extra))


def _usage(store: Store, run_id: int) -> dict[str, tuple[int, int, int]]:
    """Per stage: (calls, items asked for, items served from caches)."""
    with store.read() as s:
        rows = s.execute(select(UsageEvent.stage, func.sum(UsageEvent.calls), func.sum(UsageEvent.items),
                                func.sum(UsageEvent.cached)).where(UsageEvent.run_id == run_id)
                         .group_by(UsageEvent.stage)).all()
    return {stage: (int(calls), int(items), int(cached)) for stage, calls, items, cached in rows}


def _workers(store: Store, run_id: int) -> set[str]:
    with store.read() as s:
        return set(s.scalars(select(UsageEvent.worker).where(UsageEvent.run_id == run_id, UsageEvent.stage == "generate")))


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, tiny_models) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """The same run by one process (the local executor) in a store of its own."""
    folder = tmp_path_factory.mktemp("reference")
    store = open_store(str(folder / "ref.db"))
    make_demo(store)
    result = CliRunner().invoke(cli, [*_args(folder, tiny_models.specs["scorer"]), "--db", store.url])
    assert result.exit_code == 0, result.output
    out = {"snapshot": snapshot(store, 1), "usage": _usage(store, 1)}
    store.dispose()
    return out


def _assert_steps_once(store: Store, run_id: int) -> None:
    with store.read() as s:
        assert s.scalars(select(WorkItem.status).where(WorkItem.run_id == run_id).distinct()).all() == ["done"]
        per_step = s.execute(select(IterationState.item_id, IterationState.iteration, func.count())
                             .where(IterationState.run_id == run_id)
                             .group_by(IterationState.item_id, IterationState.iteration)).all()
        assert len(per_step) == STEPS and {n for _, _, n in per_step} == {1}
        assert s.get(Run, run_id).status == "done"


@needs_ray
@pytest.mark.postgres
def test_two_actors_on_postgresql_equal_one_process(local_ray, pg_url: str, tmp_path: Path, tiny_models, reference) -> None:  # type: ignore[no-untyped-def]
    store = open_store(pg_url)
    make_demo(store)
    result = CliRunner().invoke(cli, [*_args(tmp_path, tiny_models.specs["scorer"], "--executor", "ray",
                                             "--workers", "2"), "--db", pg_url])
    assert result.exit_code == 0, result.output
    assert f"run 1: done; {ITEMS}/{ITEMS} items done; {STEPS} steps committed now" in result.output
    _assert_steps_once(store, 1)
    assert_same_results(snapshot(store, 1), reference["snapshot"])
    assert len(_workers(store, 1)) == 2, "both actors worked"
    usage, ref = _usage(store, 1), reference["usage"]
    assert usage.keys() == ref.keys() == {"encode_pool", "encode_image", "encode_text", "generate"}
    # Generations and image encodes are per (item, iteration): equal counts mean no step was done
    # twice. Both actors needed the pool: one encoded it, the other read the cache. Text encodes
    # ask for the same texts; two actors may both miss the embedding cache for a text they score
    # at the same moment, so only what was asked is compared there.
    assert usage["generate"] == ref["generate"] and usage["encode_image"] == ref["encode_image"]
    calls, asked, cached = usage["encode_pool"]
    assert (calls, asked - cached) == (ref["encode_pool"][0], ref["encode_pool"][1] - ref["encode_pool"][2])
    assert usage["encode_text"][1] == ref["encode_text"][1]
    store.dispose()


@needs_ray
def test_killing_an_actor_mid_run_on_sqlite_still_equals_one_process(local_ray, tmp_path: Path, tiny_models,  # type: ignore[no-untyped-def]
                                                                    reference, monkeypatch: pytest.MonkeyPatch) -> None:
    """SQLite, ``capstore worker RUN --executor ray --workers 2``: once an actor holds a batch and
    steps are committed, it is killed (``ray.kill``, no restart). The driver gives its items back
    and the survivor finishes the run."""
    monkeypatch.setenv("CAPSTORE_LEASE_SECONDS", "2")
    db = str(tmp_path / "store.db")
    store = open_store(db)
    make_demo(store)
    pool, prompt = write_demo_assets(tmp_path / "assets")
    cfg = RunConfig(method="mils", dataset="demo", limit=ITEMS, scorer=tiny_models.specs["scorer"],
                    generator="fake:slow", iterations=ITERATIONS, keep=5, requested=8, batch_images=4)
    assert create_run(store, cfg, pool_file=str(pool), prompt_file=str(prompt)) == 1  # as `_args` would
    killed: list[str] = []

    def kill_a_holder() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with store.read() as s:
                steps = s.scalar(select(func.count()).select_from(IterationState)) or 0
                owners = s.scalars(select(WorkItem.lease_owner).where(WorkItem.status == "leased")).all()
            if steps >= 2 and owners:
                victim = sorted(o for o in owners if o)[0]
                local_ray.kill(local_ray.get_actor(victim.rsplit(":", 1)[1]), no_restart=True)
                killed.append(victim)
                return
            time.sleep(0.02)

    killer = threading.Thread(target=kill_a_holder)
    killer.start()
    result = CliRunner().invoke(cli, ["worker", "1", "--executor", "ray", "--workers", "2", "--quiet", "--db", db])
    killer.join()
    assert killed, "no actor was killed"
    assert result.exit_code == 0, result.output
    assert "was lost (ActorDiedError)" in result.output and f"{ITEMS}/{ITEMS} items done" in result.output
    _assert_steps_once(store, 1)
    assert_same_results(snapshot(store, 1), reference["snapshot"])
    store.dispose()


@needs_ray
def test_ctrl_c_on_the_driver_gives_every_actors_items_back(local_ray, tmp_path: Path, tiny_models, reference) -> None:  # type: ignore[no-untyped-def]
    """Ctrl-C once both actors hold a batch: both are killed, every item is pending again, the run
    is interrupted; a plain ``capstore worker`` then finishes it, equal to one process's."""
    db = str(tmp_path / "store.db")
    store = open_store(db)
    make_demo(store)

    def interrupt_when_both_hold() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with store.read() as s:
                owners = set(s.scalars(select(WorkItem.lease_owner).where(WorkItem.status == "leased")))
            if len(owners) == 2:
                _thread.interrupt_main()  # what Ctrl-C does to the driver
                return
            time.sleep(0.02)

    interrupter = threading.Thread(target=interrupt_when_both_hold)
    interrupter.start()
    result = CliRunner().invoke(cli, [*_args(tmp_path, tiny_models.specs["scorer"], "--executor", "ray",
                                             "--workers", "2"), "--db", db])
    interrupter.join()
    assert result.exit_code == 130, result.output
    assert "interrupted: held items given back; continue with `capstore resume 1`" in result.output
    with store.read() as s:
        statuses = dict(s.execute(select(WorkItem.status, func.count()).group_by(WorkItem.status)).all())
        assert "leased" not in statuses and statuses.get("pending", 0) > 0
        assert s.get(Run, 1).status == "interrupted"
    result = CliRunner().invoke(cli, ["worker", "1", "--quiet", "--db", db])  # any worker continues it
    assert result.exit_code == 0, result.output
    _assert_steps_once(store, 1)
    assert_same_results(snapshot(store, 1), reference["snapshot"])
    again = CliRunner().invoke(cli, ["worker", "1", "--executor", "ray", "--workers", "2", "--db", db])
    assert again.exit_code == 0 and "done; 16/16 items done; 0 steps committed now" in again.output  # no actor started
    store.dispose()


@needs_ray
def test_a_run_whose_every_actor_is_lost_exits_1_unfinished(local_ray, tmp_path: Path, tiny_models) -> None:  # type: ignore[no-untyped-def]
    """The only actor is killed as soon as it holds a batch: the driver gives the batch back at once,
    says the run did not finish and exits 1; the run is left interrupted, nothing leased."""
    db = str(tmp_path / "store.db")
    store = open_store(db)
    make_demo(store)
    pool, prompt = write_demo_assets(tmp_path / "assets")
    cfg = RunConfig(method="mils", dataset="demo", limit=8, scorer=tiny_models.specs["scorer"],
                    generator="fake:slow", iterations=ITERATIONS, keep=5, requested=8, batch_images=4)
    run_id = create_run(store, cfg, pool_file=str(pool), prompt_file=str(prompt))

    def kill_the_holder() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with store.read() as s:
                owner = s.scalar(select(WorkItem.lease_owner).where(WorkItem.status == "leased").limit(1))
            if owner:
                local_ray.kill(local_ray.get_actor(owner.rsplit(":", 1)[1]), no_restart=True)
                return
            time.sleep(0.02)

    killer = threading.Thread(target=kill_the_holder)
    killer.start()
    result = CliRunner().invoke(cli, ["worker", str(run_id), "--executor", "ray", "--workers", "1", "--quiet",
                                      "--db", db])
    killer.join()
    assert result.exit_code == 1, result.output
    assert "actor 1 of 1 was lost (ActorDiedError); 4 items it held were given back" in result.output
    assert f"run {run_id} did not finish (8 items open); continue with `capstore worker {run_id}`" in result.output
    with store.read() as s:
        assert set(s.scalars(select(WorkItem.status))) == {"pending"}
        assert s.get(Run, run_id).status == "interrupted"
    store.dispose()


@needs_ray
def test_a_model_that_cannot_load_in_the_actors_is_one_line(local_ray, tmp_path: Path, tiny_models) -> None:  # type: ignore[no-untyped-def]
    """The scorer's weights break after the run was created: every actor fails to load them; the
    driver says so in one line (exit 2, as a local worker) and the run is left resumable."""
    import shutil

    clip = tmp_path / "clip"
    shutil.copytree(Path(tiny_models.specs["scorer"].split(":", 1)[1]), clip)
    db = str(tmp_path / "store.db")
    store = open_store(db)
    make_demo(store)
    pool, prompt = write_demo_assets(tmp_path / "assets")
    run_id = create_run(store, RunConfig(method="mils", dataset="demo", limit=4, scorer=f"open_clip:{clip}",
                                         generator="fake:mutate", iterations=1, keep=5, requested=8),
                        pool_file=str(pool), prompt_file=str(prompt))
    (clip / "open_clip_model.safetensors").write_bytes(b"not weights")
    result = CliRunner().invoke(cli, ["worker", str(run_id), "--executor", "ray", "--workers", "2", "--quiet",
                                      "--db", db])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert errors == [f"Error: cannot load open_clip model open_clip:{clip}: Error while deserializing header: "
                      "header too large"], result.output
    with store.read() as s:
        assert set(s.scalars(select(WorkItem.status))) == {"pending"}
        assert s.get(Run, run_id).status == "interrupted"
    store.dispose()


@needs_ray
def test_sqlite_with_a_ray_on_another_machine_is_refused_before_anything(tmp_path: Path) -> None:
    db = str(tmp_path / "store.db")
    make_demo(open_store(db))
    result = CliRunner().invoke(cli, ["run", "--method", "fake", "--captioner", "fake:echo", "--executor", "ray",
                                      "--ray-address", "ray://192.0.2.1:10001", "--db", db])
    assert result.exit_code == 2
    assert result.output.startswith("Error: --ray-address ray://192.0.2.1:10001: a SQLite store") \
        and "PostgreSQL" in result.output and result.output.count("\n") == 1
    with open_store(db).read() as s:
        assert s.scalar(select(func.count()).select_from(Run)) == 0
    for args in (["--ray-address", "192.0.2.7:6379"], ["--workers", "0"]):
        result = CliRunner().invoke(cli, ["worker", "1", "--executor", "ray", *args, "--db", db])
        assert result.exit_code == 2 and result.output.startswith(f"Error: {args[0]} "), result.output


def test_local_addresses() -> None:
    assert all(is_local_address(a) for a in (None, "auto", "local", "127.0.0.1:6379", "ray://localhost:10001"))
    assert not any(is_local_address(a) for a in ("192.0.2.1:6379", "ray://192.0.2.1:10001", "ray://[2001:db8::1]:10001"))


def test_the_local_executor_refuses_ray_options(tmp_path: Path) -> None:
    db = str(tmp_path / "store.db")
    make_demo(open_store(db))
    for args, message in ((["--workers", "2"], "--workers 2 needs --executor ray"),
                          (["--gpus-per-worker", "1"], "--gpus-per-worker is an option of --executor ray"),
                          (["--executor", "spark"], "--executor 'spark': expected one of local, ray")):
        result = CliRunner().invoke(cli, ["run", "--method", "fake", "--captioner", "fake:echo", *args, "--db", db])
        assert result.exit_code == 2 and result.output.startswith(f"Error: {message}"), result.output
    with open_store(db).read() as s:
        assert s.scalar(select(func.count()).select_from(Run)) == 0


@needs_ray
def test_zero_cpus_per_worker_reserves_no_cpu() -> None:
    from types import SimpleNamespace

    from capstore.runs.executors import ExecutorOptions
    from capstore.runs.executors.ray import _actor_options

    cfg = RunConfig(method="fake", dataset="demo")
    store: Any = SimpleNamespace(dialect="postgresql")  # no node affinity: no Ray runtime needed
    for given, expected in ((0.0, 0.0), (None, 1.0), (2.5, 2.5)):
        options = ExecutorOptions(name="ray", gpus_per_worker=0.0, cpus_per_worker=given)
        assert _actor_options(store, cfg, options)["num_cpus"] == expected, given
