"""Reading a SQLite store's files must not drop this process's SQLite locks.

POSIX advisory locks belong to the process and the file: closing any descriptor of the file drops
them all. The mirror's change marker once read the store's header, WAL and WAL index with
``open()``; a child process (the SQLite scanner) then found the WAL index unlocked, reset it as its
first user, and this process died with SIGBUS at its next commit (``eval --candidates`` at full size).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from sqlalchemy import text

from capstore.analysis.mirror import change_marker
from capstore.store import open_store

PROBE = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
try:
    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 128)
except OSError:
    print("locked")
else:
    print("free")
"""


def _index_in_use(shm: Path) -> bool:
    """Whether another process holds SQLite's DMS lock on the WAL index (byte 128 of ``-shm``): every
    open connection holds it shared; a connection that can take it exclusively resets the index."""
    done = subprocess.run([sys.executable, "-c", PROBE, str(shm)], capture_output=True, text=True, check=True)
    return done.stdout.strip() == "locked"


def test_reading_the_store_files_keeps_the_locks_of_open_connections(tmp_path: Path) -> None:
    db = tmp_path / "store.db"
    store = open_store(str(db))
    with store.write() as s:
        s.execute(text("INSERT INTO prices (kind, key, usd, source, updated_at) "
                       "VALUES ('device_hour', 'probe', 1.0, 'test', '2026-12-06')"))
    with store.read() as s:
        s.execute(text("SELECT count(*) FROM prices")).scalar()  # the pooled connection stays open
    shm = db.with_name(db.name + "-shm")
    assert (db.with_name(db.name + "-wal")).stat().st_size > 0 and _index_in_use(shm)
    for _ in range(3):
        assert change_marker(store)  # header, WAL and index read
    open_store(str(db)).dispose()  # a second store on the same file (its header checked)
    assert _index_in_use(shm), "this process's SQLite locks were dropped"
    with store.write() as s:  # and the connection still commits
        s.execute(text("DELETE FROM prices WHERE key = 'probe'"))
    with open(shm, "rb") as f:  # what a plain open() and close() does: the probe sees it
        f.read(1)
    assert not _index_in_use(shm)
    store.dispose()
