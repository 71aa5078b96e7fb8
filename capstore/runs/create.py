"""Creating a run (validating everything before any work) and extending a finished one."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import delete, select, update

from capstore import __version__
from capstore.backends.presets import default_spec
from capstore.backends.registry import parse_spec
from capstore.datasets.lookup import find_split
from capstore.errors import InputError
from capstore.methods import BASELINES, METHODS
from capstore.methods.mils import check_template
from capstore.methods.pool import read_pool, store_pool
from capstore.runs.config import RunConfig
from capstore.store.engine import Store
from capstore.store.schema import Caption, Item, Run, WorkItem, utcnow


def prepare_config(store: Store, cfg: RunConfig, pool_file: str | None = None, prompt_file: str | None = None) -> RunConfig:
    """Check a config and load its files into the store; one-line InputError on any problem."""
    if cfg.method not in METHODS:
        raise InputError(f"unknown method {cfg.method!r}; available: {', '.join(METHODS)}")
    with store.read() as s:
        find_split(s, cfg.dataset, cfg.split)
        if cfg.init_from is not None and s.get(Run, cfg.init_from) is None:
            raise InputError(f"--init-from {cfg.init_from}: no such run")
    # Unnamed backends default to the real models of the method (MILS's SigLIP + Llama-3.1, ...).
    cfg.scorer = cfg.scorer or (default_spec(cfg.method, "scorer") if cfg.method == "mils" else None)
    cfg.generator = cfg.generator or default_spec(cfg.method, "generator")
    cfg.captioner = cfg.captioner or default_spec(cfg.method, "captioner")
    if cfg.method == "mils":
        parse_spec("scorer", cfg.scorer)
        parse_spec("generator", cfg.generator)
        if pool_file is None and cfg.pool_sha is None:
            raise InputError("--method mils needs --pool FILE (one description a line)")
        if prompt_file is not None:
            path = Path(prompt_file)
            if not path.is_file():
                raise InputError(f"prompt file {path} does not exist")
            cfg.prompt = path.read_text(encoding="utf-8")
            check_template(cfg.prompt, str(path))
        if cfg.prompt is None:
            raise InputError("--method mils needs --prompt FILE (with {descriptions})")
        if pool_file is not None:
            lines = read_pool(pool_file, cfg.pool_size)
            cfg.pool_sha, cfg.pool_name = store_pool(store, lines, Path(pool_file).name), Path(pool_file).name
        if min(cfg.iterations, cfg.keep, cfg.requested) < 0 or cfg.keep == 0:
            raise InputError("--iterations, --keep and --requested must be positive")
    else:
        if not cfg.captioner:
            raise InputError(f"--method {cfg.method} needs --captioner {cfg.method}:MODEL")
        spec = parse_spec("captioner", cfg.captioner)
        if spec.backend != cfg.method:
            raise InputError(f"--method {cfg.method} needs a {cfg.method} captioner, not {cfg.captioner!r}")
        if cfg.scorer:
            parse_spec("scorer", cfg.scorer)
    assert cfg.method in METHODS and (cfg.method == "mils" or cfg.method in BASELINES)
    return cfg


def create_run(store: Store, cfg: RunConfig, pool_file: str | None = None, prompt_file: str | None = None) -> int:
    """Validate ``cfg``, then create the run and one pending work item per item; returns the run id."""
    cfg = prepare_config(store, cfg, pool_file, prompt_file)
    with store.write() as s:
        split = find_split(s, cfg.dataset, cfg.split)
        cfg.split = split.name
        items = s.scalars(select(Item.id).where(Item.split_id == split.id).order_by(Item.external_id)).all()
        if cfg.limit is not None:
            items = items[: cfg.limit]
        if not items:
            raise InputError(f"dataset {cfg.dataset}/{split.name} has no items")
        run = Run(method=cfg.method, label=cfg.label, config=cfg.to_json(), config_hash=cfg.hash(),
                  split_id=split.id, status="pending", parent_run_id=cfg.init_from, seed=cfg.seed,
                  capstore_version=__version__)
        s.add(run)
        s.flush()
        s.execute(WorkItem.__table__.insert(), [{"run_id": run.id, "item_id": i, "status": "pending",
                                                 "attempts": 0, "iterations_done": -1, "updated_at": utcnow()}
                                                for i in items])
        return run.id


def extend_run(store: Store, run_id: int, iterations: int) -> None:
    """Raise a MILS run's iteration count; finished items that did not stop early go back to work."""
    with store.write() as s:
        run = load_run(s, run_id)
        cfg = RunConfig.from_json(run.config)
        if cfg.method != "mils":
            raise InputError(f"run {run_id} is a {cfg.method} run; only MILS runs have iterations")
        if iterations < cfg.iterations:
            raise InputError(f"run {run_id} already has {cfg.iterations} iterations; cannot shrink to {iterations}")
        if iterations == cfg.iterations:
            return
        cfg.iterations = iterations
        run.config, run.config_hash, run.status = cfg.to_json(), cfg.hash(), "pending"
        reopen = select(WorkItem.item_id).where(WorkItem.run_id == run_id, WorkItem.status == "done",
                                                WorkItem.stopped_early_at.is_(None))
        s.execute(delete(Caption).where(Caption.run_id == run_id, Caption.item_id.in_(reopen)))
        s.execute(update(WorkItem).where(WorkItem.run_id == run_id, WorkItem.status == "done",
                                         WorkItem.stopped_early_at.is_(None)).values(status="pending"))


def load_run(session, run_id: int) -> Run:  # type: ignore[no-untyped-def]
    """The run ``run_id``; InputError if there is none."""
    run = session.get(Run, run_id)
    if run is None:
        raise InputError(f"no run {run_id} in this store (see `capstore runs list`)")
    return run
