"""The initial description pool: read from a file, subsampled deterministically, kept in the store."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

from sqlalchemy import select

from capstore.errors import InputError
from capstore.store.content import get_texts, insert_ignore, put_texts
from capstore.store.engine import Store
from capstore.store.schema import TextSet, TextSetMember


def read_pool(path: str | Path, size: int | None, seed: int = 0) -> list[str]:
    """Non-empty, unique lines of ``path``; ``size`` lines sampled with ``seed`` (MILS samples with seed 0)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"pool file {p} does not exist")
    lines = list(dict.fromkeys(line.strip() for line in p.read_text(encoding="utf-8").splitlines() if line.strip()))
    if not lines:
        raise InputError(f"pool file {p} has no descriptions")
    if size is not None and size < len(lines):
        lines = random.Random(seed).sample(lines, size)
    return lines


def store_pool(store: Store, lines: list[str], name: str) -> str:
    """Store the pool as a text set; returns its sha (the same lines give the same sha)."""
    with store.write() as s:
        shas = put_texts(s, lines)
        set_sha = hashlib.sha256("\n".join(shas).encode()).hexdigest()
        insert_ignore(s, TextSet, [{"sha256": set_sha, "kind": "pool", "name": name, "size": len(shas)}])
        insert_ignore(s, TextSetMember, [{"set_sha": set_sha, "ordinal": i, "text_sha": t} for i, t in enumerate(shas)])
    return set_sha


def load_pool(store: Store, set_sha: str) -> list[str]:
    """The pool's lines in order, from the store (so workers need not have the file)."""
    with store.read() as s:
        shas = s.scalars(select(TextSetMember.text_sha).where(TextSetMember.set_sha == set_sha)
                         .order_by(TextSetMember.ordinal)).all()
        texts = get_texts(s, shas)
    return [texts[sha] for sha in shas]
