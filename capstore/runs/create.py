"""Creating a run (validating everything before any work) and extending a finished one."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from sqlalchemy import delete, select, update

from capstore import __version__
from capstore.backends.presets import default_spec
from capstore.backends.registry import parse_spec
from capstore.datasets.lookup import find_split
from capstore.errors import InputError
from capstore.inputs import check_text, read_text
from capstore.methods.registry import method_spec
from capstore.methods.mils import check_template
from capstore.methods.modalities import check_media
from capstore.methods.pool import pool_sha, put_pool, read_pool
from capstore.runs.config import RunConfig
from capstore.runs.validate import check_applicable, check_config
from capstore.store.engine import Store
from capstore.store.ids import check_run_id
from capstore.store.schema import Caption, Item, Run, WorkItem, utcnow


def prepare_config(store: Store, cfg: RunConfig, pool_file: str | None = None, prompt_file: str | None = None,
                   given: Iterable[str] = ()) -> RunConfig:
    """Check a config and read its files, writing nothing; returns it complete (defaults, pool sha).

    ``given``: the options the user set explicitly (an option the method does not use is an error).
    Every problem is a one-line InputError, raised before anything is stored.
    """
    return _checked(store, cfg, pool_file, prompt_file, given)[0]


def _checked(store: Store, cfg: RunConfig, pool_file: str | None, prompt_file: str | None,
             given: Iterable[str]) -> tuple[RunConfig, list[str] | None]:
    """``prepare_config``, also returning the pool's lines read from ``pool_file`` (to be stored)."""
    method = method_spec(cfg.method)  # InputError naming the known methods
    check_applicable(cfg.method, given)
    check_config(cfg)
    if cfg.label is not None:
        check_text(cfg.label, "--label")
    with store.read() as s:
        split = find_split(s, cfg.dataset, cfg.split)
        split_id, where = split.id, f"{cfg.dataset}/{split.name}"
        if not s.scalar(select(Item.id).where(Item.split_id == split.id).limit(1)):
            raise InputError(f"dataset {cfg.dataset}/{split.name} has no items")
        if cfg.init_from is not None and s.get(Run, cfg.init_from) is None:
            raise InputError(f"--init-from {cfg.init_from}: no such run")
    # Unnamed backends default to the real models of the method (MILS's SigLIP + Llama-3.1, ...).
    cfg.scorer = cfg.scorer or (default_spec(cfg.method, "scorer") if method.pool else None)
    cfg.generator = cfg.generator or default_spec(cfg.method, "generator")
    cfg.captioner = cfg.captioner or default_spec(cfg.method, "captioner")
    with store.read() as s:  # images, videos or audio clips: the method and its scorer must take them
        check_media(s, cfg.method, cfg.scorer, split_id, where)
    lines = None
    if method.pool:
        parse_spec("scorer", cfg.scorer)
        parse_spec("generator", cfg.generator)
        if pool_file is None and cfg.pool_sha is None:
            raise InputError(f"--method {cfg.method} needs --pool FILE (one description a line)")
        if prompt_file is not None:
            cfg.prompt = read_text(prompt_file, "prompt file")
            check_template(cfg.prompt, str(prompt_file))
        if cfg.prompt is None:
            raise InputError(f"--method {cfg.method} needs --prompt FILE (with {{descriptions}})")
        if pool_file is not None:
            lines = read_pool(pool_file, cfg.pool_size)
            cfg.pool_sha, cfg.pool_name = pool_sha(lines), Path(pool_file).name
    else:
        if not cfg.captioner:
            raise InputError(f"--method {cfg.method} needs --captioner {cfg.method}:MODEL")
        spec = parse_spec("captioner", cfg.captioner)
        if spec.backend != cfg.method:
            raise InputError(f"--method {cfg.method} needs a {cfg.method} captioner, not {cfg.captioner!r}")
        if cfg.scorer:
            parse_spec("scorer", cfg.scorer)
    used = [spec for spec in (getattr(cfg, method.writer),) if spec]
    if cfg.base_url and not any(spec.startswith("openai:") for spec in used):
        raise InputError(f"--base-url applies to openai: backends; this run uses {', '.join(used) or 'none'}")
    return cfg, lines


def create_run(store: Store, cfg: RunConfig, pool_file: str | None = None, prompt_file: str | None = None,
               given: Iterable[str] = ()) -> int:
    """Validate ``cfg``, then create the run and one pending work item per item; returns the run id.

    Nothing is written unless every check passes: the pool, the run and its work items go in last, in
    one transaction (``capstore gc`` removes pools no run uses: it must never see this pool without its run).
    """
    cfg, lines = _checked(store, cfg, pool_file, prompt_file, given)
    cfg.check_backends()  # here, not in prepare_config: a device, key or weights missing on this machine
    with store.write() as s:
        if lines is not None:
            put_pool(s, lines, cfg.pool_name or "pool")
        split = find_split(s, cfg.dataset, cfg.split)
        cfg.split = split.name
        items = s.scalars(select(Item.id).where(Item.split_id == split.id).order_by(Item.external_id)).all()
        if cfg.limit is not None:
            items = items[: cfg.limit]
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
        if not method_spec(cfg.method).iterative:
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
    run = session.get(Run, check_run_id(run_id))
    if run is None:
        raise InputError(f"no run {run_id} in this store (see `capstore runs list`)")
    return run
