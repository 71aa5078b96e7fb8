"""Where a run's workers run: here, in this process (``local``), or as Ray actors (``ray``).

Every executor runs the one worker loop, ``capstore.runs.engine.work``; the store's leases decide
who does what, so an executor only starts workers, watches the run in the store and says how it
ended. ``ray`` is imported only when asked for (``pip install 'capstore[ray]'``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

from capstore.errors import InputError
from capstore.runs.engine import WorkSummary, work
from capstore.store.engine import Store

MAX_WORKERS = 10_000
MAX_RESTARTS = 1_000


@dataclass(frozen=True)
class ExecutorOptions:
    """How to run a run's workers; None means the executor's default (``ray``: see ``executors.ray``)."""

    name: str = "local"
    workers: int | None = None  # default 1
    address: str | None = None  # Ray: None starts a local Ray; "auto", "HOST:PORT" or "ray://HOST:10001"
    gpus_per_worker: float | None = None
    cpus_per_worker: float | None = None
    max_restarts: int | None = None

    @property
    def worker_count(self) -> int:
        return self.workers or 1


@dataclass
class Execution:
    """How an execution ended: the run's summary and lines worth telling (lost actors, ...)."""

    summary: WorkSummary
    notes: list[str] = field(default_factory=list)


RAY_ONLY = {"address": "--ray-address", "gpus_per_worker": "--gpus-per-worker",
            "cpus_per_worker": "--cpus-per-worker", "max_restarts": "--max-restarts"}


def check_executor(store: Store, options: ExecutorOptions) -> None:
    """Refuse unusable executor options in one line, before anything is written or started."""
    if options.name not in EXECUTORS:
        raise InputError(f"--executor {options.name!r}: expected one of {', '.join(EXECUTORS)}")
    if options.workers is not None and not 1 <= options.workers <= MAX_WORKERS:
        raise InputError(f"--workers {options.workers}: expected 1 to {MAX_WORKERS:,}")
    for value, flag, low in ((options.gpus_per_worker, "--gpus-per-worker", 0.0),
                             (options.cpus_per_worker, "--cpus-per-worker", 0.0)):
        if value is not None and not (math.isfinite(value) and value >= low):
            raise InputError(f"{flag} {value}: expected a finite number >= {low:g}")
    if options.max_restarts is not None and not -1 <= options.max_restarts <= MAX_RESTARTS:
        raise InputError(f"--max-restarts {options.max_restarts}: expected -1 (no limit) to {MAX_RESTARTS:,}")
    REGISTRY[options.name].check(store, options)


def execute(store: Store, run_id: int, options: ExecutorOptions, *, progress: bool = True,
            resume: bool = False, wait: bool = True) -> Execution:
    """Work run ``run_id`` with the executor ``options`` name (after ``check_executor``)."""
    return REGISTRY[options.name].execute(store, run_id, options, progress, resume, wait)


def _check_local(store: Store, options: ExecutorOptions) -> None:
    given = [flag for attr, flag in RAY_ONLY.items() if getattr(options, attr) is not None]
    if given:
        raise InputError(f"{given[0]} is an option of --executor ray; the local executor does not use it")
    if options.worker_count > 1:
        raise InputError(f"--workers {options.workers} needs --executor ray (or start more "
                         "`capstore worker RUN` processes, here or on other machines)")


def _execute_local(store: Store, run_id: int, options: ExecutorOptions, progress: bool, resume: bool,
                   wait: bool) -> Execution:
    return Execution(work(store, run_id, progress=progress, resume=resume, wait=wait))


def _check_ray(store: Store, options: ExecutorOptions) -> None:
    from capstore.runs.executors.ray import check_ray_options  # ray only when asked for

    check_ray_options(store, options)


def _execute_ray(store: Store, run_id: int, options: ExecutorOptions, progress: bool, resume: bool,
                 wait: bool) -> Execution:
    from capstore.runs.executors.ray import work_on_ray

    return work_on_ray(store, run_id, options, progress=progress, wait=wait)  # actors resume by their leases


@dataclass(frozen=True)
class ExecutorSpec:
    """An executor: ``check`` refuses its unusable options in one line; ``execute`` works a run."""

    check: Callable[[Store, ExecutorOptions], None]
    execute: Callable[[Store, int, ExecutorOptions, bool, bool, bool], Execution]  # progress, resume, wait


REGISTRY: dict[str, ExecutorSpec] = {"local": ExecutorSpec(_check_local, _execute_local),
                                     "ray": ExecutorSpec(_check_ray, _execute_ray)}
EXECUTORS = tuple(REGISTRY)
