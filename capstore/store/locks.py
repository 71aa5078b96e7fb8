"""Store-wide named locks across processes and machines, released when their holder dies.

For work that many workers would otherwise all do at once (encoding the MILS pool): one takes
the lock and does it, the others wait and then find the result in the cache.

- PostgreSQL: a session-level advisory lock (``pg_try_advisory_lock``) on a connection of its own,
  in autocommit so no transaction stays open while it is held. The server drops it when the
  holder's connection ends, so a killed holder blocks no one.
- SQLite: an exclusive ``flock`` on a small file beside the store file (``<store>-<hash>.lock``),
  through ``filelock``. The kernel drops it when the holder's process dies; it is the same
  file-locking SQLite itself relies on for the store.
- An in-memory SQLite store lives in one process: a process-wide lock per name.

Waiting polls (every ``poll`` seconds), so a waiter can be interrupted with Ctrl-C.
"""

from __future__ import annotations

import hashlib
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from sqlalchemy import text
from sqlalchemy.engine import make_url

from capstore.store.engine import Store

_MEMORY_LOCKS: dict[tuple[str, str], threading.Lock] = {}
_MEMORY_GUARD = threading.Lock()


def _key(name: str) -> int:
    """A signed 64-bit advisory-lock key for ``name``."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


def lock_file(store: Store, name: str) -> Path | None:
    """The lock file of ``name`` for a SQLite file store (None for other stores)."""
    url = make_url(store.url)
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    digest = hashlib.sha256(name.encode()).hexdigest()[:16]
    return Path(f"{url.database}-{digest}.lock")


@contextmanager
def store_lock(store: Store, name: str, poll: float = 0.1) -> Iterator[None]:
    """Hold the store-wide lock ``name`` for the ``with`` block, waiting for its holder if need be."""
    if store.dialect == "postgresql":
        with _advisory_lock(store, _key(name), poll):
            yield
        return
    path = lock_file(store, name)
    if path is None:
        with _MEMORY_GUARD:
            lock = _MEMORY_LOCKS.setdefault((store.url, name), threading.Lock())
        with lock:
            yield
        return
    from filelock import FileLock

    with FileLock(str(path), poll_interval=poll):
        yield


@contextmanager
def _advisory_lock(store: Store, key: int, poll: float) -> Iterator[None]:
    with store.engine.connect() as conn:
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        while not conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar():
            time.sleep(poll)
        try:
            yield
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
