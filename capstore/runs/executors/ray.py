"""The Ray executor: N actors, each one ``capstore worker`` (the same ``engine.work`` loop).

The driver (``capstore run/worker --executor ray``) connects to Ray (or starts a local one), starts
the actors with their resources (``--gpus-per-worker``: Ray sets each actor's
``CUDA_VISIBLE_DEVICES``), follows the run's progress in the store and prints its summary. The store
stays the only source of truth: actors claim work with leases, so

- an actor that dies is restarted (``max_restarts``) and its new incarnation gives back what the old
  one held; one that is not restarted has its items given back by the driver as soon as Ray reports
  it dead, or, if the driver is gone too, by lease expiry (one lease, renewed by a heartbeat);
- Ctrl-C on the driver kills the actors, gives every item they held back and marks the run
  interrupted (``capstore resume`` or another execution continues it);
- a SQLite store works with actors pinned to the driver's node; a Ray address on another machine
  needs PostgreSQL and is refused before anything starts.

``ray`` is imported only inside the functions that need it.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import replace
from typing import Any, Iterator

from tqdm import tqdm

from capstore.errors import CapstoreError, InputError, first_line
from capstore.runs.config import RunConfig
from capstore.runs.create import load_run
from capstore.runs.engine import WorkSummary, settle, steps_left, work
from capstore.runs.executors import Execution, ExecutorOptions
from capstore.runs.executors.slots import new_slots, release_slots, slot_worker_id
from capstore.runs.leases import lease_seconds, open_work
from capstore.store.engine import Store, open_store

POLL_S = 1.0  # how often the driver reads the run's progress from the store
# Once every item has ended, actors are told to stop; one still starting, restarting or waiting
# for resources never returns, and is killed after this long.
FINISH_GRACE_S = 10.0
KILL_WAIT_S = 30.0  # after ray.kill: how long to wait for the actors to be dead before giving their items back
DEFAULT_MAX_RESTARTS = 1
LOCAL_ADDRESSES = (None, "", "local", "auto")


def check_ray_options(store: Store, options: ExecutorOptions) -> None:
    """Refuse, in one line and without connecting: no Ray installed; SQLite with a Ray on another machine;
    a Ray Client address without the client's dependencies."""
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        raise InputError("--executor ray needs Ray: pip install 'capstore[ray]'")
    if store.dialect == "sqlite" and not is_local_address(options.address):
        raise InputError(f"--ray-address {options.address}: a SQLite store ({store.engine.url.database}) lives on one "
                         "machine; actors on other machines need a PostgreSQL store (--db postgresql+psycopg://…)")
    if (options.address or "").startswith("ray://") and importlib.util.find_spec("grpc") is None:
        raise InputError(f"--ray-address {options.address}: Ray Client (ray://) needs pip install 'ray[client]'")


def is_local_address(address: str | None) -> bool:
    """Whether a Ray address names this machine (None, ``local`` and ``auto`` do)."""
    if address in LOCAL_ADDRESSES:
        return True
    host = address.split("://", 1)[-1].rsplit("/", 1)[0]  # type: ignore[union-attr]
    host = host.rsplit(":", 1)[0] if host.count(":") == 1 or host.startswith("[") else host
    host = host.strip("[]")
    if host in ("localhost", socket.gethostname()):
        return True
    try:
        infos = socket.getaddrinfo(host, None)
    except (OSError, UnicodeError):
        return False
    for family, _, _, _, sockaddr in infos:
        try:  # only an address of this machine can be bound
            with socket.socket(family, socket.SOCK_DGRAM) as probe:
                probe.bind((sockaddr[0], 0))
            return True
        except OSError:
            continue
    return False


class RunActor:
    """One worker of a run inside a Ray actor: ``engine.work`` with a slot name; models load once.

    Two threads (``max_concurrency=2``): ``work`` runs in one, so ``stop`` can reach it from the other.
    """

    def __init__(self, url: str, run_id: int, slot: str, lease: float) -> None:
        self.store = open_store(url, create=False)
        self.run_id, self.lease = run_id, lease
        self.worker = slot_worker_id(slot)
        self.stopping = threading.Event()
        # A restarted actor: what its previous incarnation held comes back now, not after a lease.
        release_slots(self.store, run_id, [slot], keep=self.worker)

    def work(self, wait: bool) -> WorkSummary:
        return work(self.store, self.run_id, worker=self.worker, progress=False, wait=wait, lease=self.lease,
                    stop=self.stopping)

    def stop(self) -> None:
        """Return from ``work`` before the next claim (at once when waiting for other actors)."""
        self.stopping.set()


def work_on_ray(store: Store, run_id: int, options: ExecutorOptions, *, progress: bool = True,
                wait: bool = True) -> Execution:
    """Work run ``run_id`` with ``options.workers`` Ray actors; returns when they are done (or lost)."""
    import ray

    with store.read() as s:
        cfg = RunConfig.from_json(load_run(s, run_id).config)
    lease = lease_seconds(cfg.lease_seconds)
    if open_work(store, run_id).left == 0:  # a finished run: no Ray, no actor, no model
        return Execution(settle(store, run_id))
    total = steps_left(store, run_id)
    slots = new_slots(options.worker_count)
    actors: list[Any] = []
    refs: dict[Any, int] = {}
    notes: list[str] = []
    errors: list[BaseException] = []
    with _connected(options.address):
        bar = tqdm(total=total, desc=f"run {run_id} ({cfg.method}) on Ray", unit="step", disable=not progress)
        try:
            actor_class, actor_options = ray.remote(RunActor), _actor_options(store, cfg, options)
            for slot in slots:  # named by slot: `ray list actors` matches work_items.lease_owner
                actors.append(actor_class.options(name=slot, **actor_options).remote(store.url, run_id, slot, lease))
            refs = {actor.work.remote(wait): i for i, actor in enumerate(actors)}
            _follow(store, run_id, refs, actors, slots, bar, total, notes, errors)
        except KeyboardInterrupt:
            _stop(actors, list(refs))
            release_slots(store, run_id, slots)
            return Execution(settle(store, run_id, total - steps_left(store, run_id), interrupted=True), notes)
        finally:
            bar.close()
        for actor in actors:  # anything still starting or restarting once the run is over
            ray.kill(actor, no_restart=True)
    # Unfinished with no actor left (lost, or stopped on an error): nobody works on the run, so it is
    # marked interrupted (resumable) as a local worker's would be, but reported as unfinished, not as a Ctrl-C.
    unfinished = open_work(store, run_id).left > 0
    summary = replace(settle(store, run_id, total - steps_left(store, run_id), interrupted=unfinished), interrupted=False)
    if errors and unfinished and isinstance(errors[0], CapstoreError):
        raise errors[0]  # the actors stopped on it (a backend that cannot load): one line, as a local worker
    return Execution(summary, notes)


@contextmanager
def _connected(address: str | None) -> Iterator[None]:
    """Ray for the duration: the one this process is already connected to, or one it connects to or starts."""
    import ray

    if ray.is_initialized():
        yield
        return
    local = address in (None, "", "local")
    kwargs: dict[str, Any] = {"include_dashboard": False} if local else {}
    try:
        ray.init(address=None if local else address, logging_level=logging.WARNING, **kwargs)
    except Exception as exc:  # ConnectionError, a bad address: one line, no stack
        where = "a local Ray" if local else f"Ray at {address}"
        raise CapstoreError(f"cannot start or reach {where}: {first_line(exc)}") from exc
    try:
        yield
    finally:
        ray.shutdown()


def _actor_options(store: Store, cfg: RunConfig, options: ExecutorOptions) -> dict[str, Any]:
    """The actors' Ray options: resources, restarts, placement."""
    import ray

    gpus = options.gpus_per_worker
    if gpus is None:  # a GPU each where the cluster has GPUs and the run may use one
        gpus = 1.0 if cfg.device != "cpu" and ray.cluster_resources().get("GPU", 0) > 0 else 0.0
    restarts = DEFAULT_MAX_RESTARTS if options.max_restarts is None else options.max_restarts
    cpus = 1.0 if options.cpus_per_worker is None else options.cpus_per_worker  # 0 is valid: no CPU reserved
    actor_options: dict[str, Any] = {"num_gpus": gpus, "num_cpus": cpus,
                                     "max_restarts": restarts, "max_task_retries": restarts, "max_concurrency": 2}
    if store.dialect == "sqlite":  # one file on this machine: every actor on the driver's node
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        actor_options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(
            node_id=ray.get_runtime_context().get_node_id(), soft=False)
    return actor_options


def _follow(store: Store, run_id: int, refs: dict[Any, int], actors: list[Any], slots: list[str], bar: tqdm,
            total: int, notes: list[str], errors: list[BaseException]) -> None:
    """Wait for the actors, moving the bar from the store; a lost actor's items go back at once."""
    import ray

    pending = list(refs)
    finished_since: float | None = None
    while pending:
        done, pending = ray.wait(pending, num_returns=len(pending), timeout=POLL_S)
        for ref in done:
            i = refs[ref]
            try:
                ray.get(ref)
            except ray.exceptions.RayTaskError as exc:  # work() raised: a backend that cannot load, ...
                cause = exc.cause if exc.cause is not None else exc
                errors.append(cause)
                notes.append(f"actor {i + 1} of {len(actors)} stopped: {first_line(cause, named=True)}")
                release_slots(store, run_id, [slots[i]])
            except ray.exceptions.RayActorError as exc:  # killed, OOM, node lost, restarts used up
                notes.append(f"actor {i + 1} of {len(actors)} was lost ({type(exc).__name__}); "
                             f"{release_slots(store, run_id, [slots[i]])} items it held were given back")
        bar.n = max(bar.n, total - steps_left(store, run_id))
        bar.set_description_str(f"run {run_id} on Ray: {len(pending)}/{len(actors)} actors working")
        bar.refresh()
        if pending and open_work(store, run_id).left == 0:  # nothing left to do: the caller kills the rest
            if finished_since is None:
                for ref in pending:
                    actors[refs[ref]].stop.remote()
            finished_since = finished_since or time.monotonic()
            if time.monotonic() - finished_since > FINISH_GRACE_S:
                return


def _stop(actors: list[Any], refs: list[Any]) -> None:
    """Kill every actor (no restart) and wait until Ray reports them gone, so none claims afterwards."""
    import ray

    for actor in actors:
        ray.kill(actor, no_restart=True)
    ray.wait(refs, num_returns=len(refs), timeout=KILL_WAIT_S)


