"""Model identity: a model row is its weights' fingerprint plus the settings that change outputs.

``weights_sha`` = sha256 over the sorted (relative name, sha256 of bytes) of the weight and config
files of a local folder or of a hub name's snapshot in the local Hugging Face cache, or of the
name + tag for weights we cannot see (APIs, open_clip tags, names not cached).

Hashing is paid once per file version, not at each backend build: a hub snapshot's large files
link to blobs named by the sha256 of their content (read from the name, never from the bytes), and
the sha256 of any other file is kept in a small SQLite file beside the user's caches
(``file_shas.sqlite`` under ``$CAPSTORE_CACHE_DIR`` or ``~/.cache/capstore``) keyed by (real path,
size, mtime, inode), so a 16 GB local folder is re-hashed only where a file changed.
``fingerprint`` = sha256 of canonical JSON {weights_sha, backend, settings (dtype, …)}. Two paths to
the same weights thus share a row and every cache keyed by it; different weights never do.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from capstore.store.content import insert_ignore
from capstore.store.engine import Store
from capstore.store.schema import Model

_SHA256_NAME = re.compile(r"[0-9a-f]{64}")
_WEIGHT_SUFFIXES = {".safetensors", ".bin", ".pt", ".pth", ".json", ".model", ".txt"}


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no spaces: the same value always gives the same bytes."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def hash_file(path: str) -> str:
    """sha256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_sha_cache_path() -> Path:
    """The SQLite file of known file hashes (``$CAPSTORE_CACHE_DIR``, ``$XDG_CACHE_HOME/capstore`` or ``~/.cache/capstore``)."""
    root = os.environ.get("CAPSTORE_CACHE_DIR")
    if not root:
        root = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "capstore")
    return Path(root) / "file_shas.sqlite"


def _known_sha(path: str, size: int, mtime_ns: int, inode: int) -> str | None:
    try:
        with _sha_db() as db:
            row = db.execute("SELECT sha256 FROM file_sha WHERE path = ? AND size = ? AND mtime_ns = ? AND inode = ?",
                             (path, size, mtime_ns, inode)).fetchone()
        return row[0] if row else None
    except (OSError, sqlite3.Error):  # a read-only or broken cache only costs a re-hash
        return None


def _remember_sha(path: str, size: int, mtime_ns: int, inode: int, sha: str) -> None:
    try:
        with _sha_db() as db:
            db.execute("INSERT OR REPLACE INTO file_sha (path, size, mtime_ns, inode, sha256) VALUES (?, ?, ?, ?, ?)",
                       (path, size, mtime_ns, inode, sha))
    except (OSError, sqlite3.Error):
        pass


class _sha_db:  # noqa: N801  (a context manager, used like a function)
    """A short connection to the file-hash cache (created on first use; concurrent workers wait on its lock)."""

    def __enter__(self) -> sqlite3.Connection:
        path = file_sha_cache_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(path), timeout=30)
        self.db.execute("CREATE TABLE IF NOT EXISTS file_sha (path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, "
                        "inode INTEGER, sha256 TEXT)")
        return self.db

    def __exit__(self, *exc: Any) -> None:
        if exc[0] is None:
            self.db.commit()
        self.db.close()


@lru_cache(maxsize=4096)
def _file_sha(path: str, size: int, mtime_ns: int, inode: int) -> str:  # size/mtime/inode: re-hash only changed files
    known = _known_sha(path, size, mtime_ns, inode)
    if known is not None:
        return known
    sha = hash_file(path)
    _remember_sha(path, size, mtime_ns, inode, sha)
    return sha


def hub_snapshot(name: str) -> Path | None:
    """The local Hugging Face cache folder of a hub name, if its weights are there (never downloads)."""
    if name.count("/") != 1 or name.startswith(("/", ".", "~")):
        return None
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name, local_files_only=True))
    except Exception:  # not cached, not a repo id, hub library missing: fall back to the name
        return None


def weights_location(source: str) -> str:
    """What to load ``source`` from: a hub name's cached snapshot folder (no network, and exactly the
    files the fingerprint hashed), else ``source`` itself (a folder, or a name to download)."""
    if Path(source).expanduser().exists():
        return str(Path(source).expanduser())
    snapshot = hub_snapshot(source)
    return str(snapshot) if snapshot is not None else source


def _content_sha(path: Path) -> str:
    """sha256 of a file's bytes. A Hugging Face cache file that links to a blob named by a sha256
    (large files: the hub names them by the sha256 of their content) is not read again."""
    if path.is_symlink():
        target = path.resolve()
        if target.parent.name == "blobs" and _SHA256_NAME.fullmatch(target.name):
            return target.name
    real = path.resolve()
    st = real.stat()
    return _file_sha(str(real), st.st_size, st.st_mtime_ns, st.st_ino)


def weights_sha(source: str) -> str:
    """Fingerprint of the weights behind ``source``: file contents for a local folder/file (a hub
    name's cached snapshot included), else the name."""
    path = Path(source).expanduser()
    if not path.exists():
        path = hub_snapshot(source) or path
    if path.exists():
        files = [path] if path.is_file() else sorted(
            p for p in path.rglob("*") if p.is_file() and p.suffix in _WEIGHT_SUFFIXES and not p.name.startswith(".")
        )
        parts = [(p.name if path.is_file() else str(p.relative_to(path)), _content_sha(p)) for p in files]
        return hashlib.sha256(canonical_json(parts).encode()).hexdigest()
    return hashlib.sha256(canonical_json({"name": source}).encode()).hexdigest()


def register_model(store: Store, *, kind: str, backend: str, name: str, weights: str,
                   settings: dict[str, Any]) -> tuple[int, str]:
    """Get or create the model row for these weights and settings; returns (id, fingerprint)."""
    w_sha = weights_sha(weights)
    fingerprint = hashlib.sha256(canonical_json({"weights": w_sha, "backend": backend, "settings": settings}).encode()).hexdigest()
    def upsert(s: Session) -> int | None:
        insert_ignore(s, Model, [{"fingerprint": fingerprint, "kind": kind, "backend": backend, "name": name,
                                  "weights_sha": w_sha, "config": settings}])
        return s.scalar(select(Model.id).where(Model.fingerprint == fingerprint))

    model_id = store.transact(upsert)
    assert model_id is not None
    return int(model_id), fingerprint
