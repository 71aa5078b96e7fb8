"""Model identity: a model row is its weights' fingerprint plus the settings that change outputs.

``weights_sha`` = sha256 over the sorted (relative name, sha256 of bytes) of the weight and config
files of a local folder or of a hub name's snapshot in the local Hugging Face cache, or of the
name + tag for weights we cannot see (APIs, open_clip tags, names not cached).
``fingerprint`` = sha256 of canonical JSON {weights_sha, backend, settings (dtype, …)}. Two paths to
the same weights thus share a row and every cache keyed by it; different weights never do.
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import select

from capstore.store.content import insert_ignore
from capstore.store.engine import Store
from capstore.store.schema import Model

_WEIGHT_SUFFIXES = {".safetensors", ".bin", ".pt", ".pth", ".json", ".model", ".txt"}


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no spaces: the same value always gives the same bytes."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


@lru_cache(maxsize=256)
def _file_sha(path: str, size: int, mtime_ns: int) -> str:  # size/mtime: re-hash only changed files
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _hub_snapshot(name: str) -> Path | None:
    """The local Hugging Face cache folder of a hub name, if its weights are there (never downloads)."""
    if name.count("/") != 1 or name.startswith(("/", ".")):
        return None
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name, local_files_only=True))
    except Exception:  # not cached, not a repo id, hub library missing: fall back to the name
        return None


def weights_sha(source: str) -> str:
    """Fingerprint of the weights behind ``source``: file contents for a local folder/file (a hub
    name's cached snapshot included), else the name."""
    path = Path(source)
    if not path.exists():
        path = _hub_snapshot(source) or path
    if path.exists():
        files = [path] if path.is_file() else sorted(
            p for p in path.rglob("*") if p.is_file() and p.suffix in _WEIGHT_SUFFIXES and not p.name.startswith(".")
        )
        parts = []
        for p in files:
            st = p.stat()
            rel = p.name if path.is_file() else str(p.relative_to(path))
            parts.append((rel, _file_sha(str(p.resolve()), st.st_size, st.st_mtime_ns)))
        return hashlib.sha256(canonical_json(parts).encode()).hexdigest()
    return hashlib.sha256(canonical_json({"name": source}).encode()).hexdigest()


def register_model(store: Store, *, kind: str, backend: str, name: str, weights: str,
                   settings: dict[str, Any]) -> tuple[int, str]:
    """Get or create the model row for these weights and settings; returns (id, fingerprint)."""
    w_sha = weights_sha(weights)
    fingerprint = hashlib.sha256(canonical_json({"weights": w_sha, "backend": backend, "settings": settings}).encode()).hexdigest()
    with store.write() as s:
        insert_ignore(s, Model, [{"fingerprint": fingerprint, "kind": kind, "backend": backend, "name": name,
                                  "weights_sha": w_sha, "config": settings}])
        model_id = s.scalar(select(Model.id).where(Model.fingerprint == fingerprint))
    assert model_id is not None
    return int(model_id), fingerprint
