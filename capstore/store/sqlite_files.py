"""Reading a SQLite store's own files (header, WAL, WAL index) without dropping its locks.

SQLite locks its files with POSIX advisory locks, which belong to the process and the file: closing
*any* descriptor of the file releases all of them (https://sqlite.org/howtocorrupt.html, 2.2). A
``with open(db) as f: f.read(100)`` beside open ``sqlite3`` connections therefore unlocks them;
another process may then take the WAL index as its first user and reset it under this process's
mapping (SIGBUS at this process's next commit: seen after ``eval --candidates`` of a 2.5M-candidate
store, whose mirror sync had read the files' headers) or write while this one reads. So the files
are read here through descriptors that stay open (``pread``), the most recently read
``MAX_OPEN`` paths' — a process would need that many stores open at once for one to be closed
under live connections.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from pathlib import Path

MAX_OPEN = 96
_OPEN: "OrderedDict[str, int]" = OrderedDict()
_LOCK = threading.Lock()


def read_head(path: str | Path, size: int) -> bytes | None:
    """The first ``size`` bytes of ``path`` (fewer for a shorter file); None if it cannot be read."""
    key = os.fspath(path)
    with _LOCK:
        try:
            now = os.stat(key)
        except OSError:
            return None
        fd = _OPEN.get(key)
        if fd is not None and not _same_file(fd, now):
            _retire(_OPEN.pop(key))  # the path names another file now (a WAL deleted and made again)
            fd = None
        if fd is None:
            try:
                fd = os.open(key, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                return None
            _OPEN[key] = fd
            while len(_OPEN) > MAX_OPEN:
                os.close(_OPEN.popitem(last=False)[1])
        _OPEN.move_to_end(key)
        try:
            return os.pread(fd, size, 0)
        except OSError:
            return None


def _same_file(fd: int, now: os.stat_result) -> bool:
    """Whether ``fd`` is still the file the path names."""
    try:
        then = os.fstat(fd)
    except OSError:
        return False
    return (then.st_dev, then.st_ino) == (now.st_dev, now.st_ino)


def _retire(fd: int) -> None:
    """Close the descriptor of a deleted file (no other process can open it, so no lock on it matters);
    one of a file renamed away is left open: a connection of this process may still lock it."""
    try:
        deleted = os.fstat(fd).st_nlink == 0
    except OSError:  # not an open descriptor any more: nothing to close
        return
    if deleted:
        os.close(fd)
