"""The initial description pool: read from a file, subsampled as MILS does, kept in the store.

The pool is a list, not a set: a line that appears twice in the file is scored twice and can take
two of the ``--keep`` places of iteration 0, as in MILS (``main_image_captioning.py``). Its
identity (the text set's sha) is the sha of its member shas in order.
"""

from __future__ import annotations

import hashlib
import io
import random
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from capstore.errors import InputError
from capstore.inputs import read_text
from capstore.store.content import get_texts, insert_ignore, put_texts, sha256_text
from capstore.store.engine import Store
from capstore.store.schema import TextSet, TextSetMember


MILS_POOL_SEED = 0  # MILS: random.seed(0) before random.sample, whatever the run's seed


def read_pool_lines(path: str | Path) -> list[str]:
    """The file's lines exactly as MILS reads them: ``[i.strip() for i in open(path).readlines()]``
    (UTF-8, universal newlines; duplicates and blank lines included, in file order)."""
    # read_text refuses what no engine can store or no read would finish (NUL, bad UTF-8, a FIFO…);
    # StringIO(newline=None) splits as open()'s universal newlines do.
    text = read_text(path, "pool file")
    return [line.strip() for line in io.StringIO(text, newline=None).readlines()]


def read_pool(path: str | Path, size: int | None, seed: int = MILS_POOL_SEED) -> list[str]:
    """The pool as MILS builds it: every line as read, or ``size`` of them drawn as
    ``random.seed(0); random.sample(lines, size)`` (duplicates included, nothing de-duplicated).

    Blank lines take part in the draw, so the subset is MILS's line for line, and are then left out
    (MILS would score an empty string as a description).
    """
    lines = read_pool_lines(path)
    if size is not None:
        if not 1 <= size <= len(lines):
            raise InputError(f"--pool-size {size}: pool file {path} has {len(lines):,} lines")
        # A private generator seeded like MILS's global one draws the same sample.
        lines = random.Random(seed).sample(lines, size)
    lines = [line for line in lines if line]
    if not lines:
        raise InputError(f"pool file {path} has no descriptions")
    return lines


def pool_sha(lines: list[str]) -> str:
    """The pool's identity without storing it: sha256 of its lines' shas, in order, duplicates included."""
    return hashlib.sha256("\n".join(sha256_text(line) for line in lines).encode()).hexdigest()


def store_pool(store: Store, lines: list[str], name: str) -> str:
    """Store the pool as a text set in a transaction of its own; returns its sha (same lines, same sha)."""
    with store.write() as s:
        return put_pool(s, lines, name)


def put_pool(session: Session, lines: list[str], name: str) -> str:
    """Store the pool as a text set in ``session``'s transaction (a run's creation stores the pool with
    the run, so ``capstore gc`` never sees the pool without the run that uses it); returns its sha."""
    shas = put_texts(session, lines)
    set_sha = pool_sha(lines)
    insert_ignore(session, TextSet, [{"sha256": set_sha, "kind": "pool", "name": name, "size": len(shas)}])
    insert_ignore(session, TextSetMember, [{"set_sha": set_sha, "ordinal": i, "text_sha": t}
                                           for i, t in enumerate(shas)])
    return set_sha


def load_pool(store: Store, set_sha: str) -> list[str]:
    """The pool's lines in order, from the store (so workers need not have the file)."""
    with store.read() as s:
        shas = s.scalars(select(TextSetMember.text_sha).where(TextSetMember.set_sha == set_sha)
                         .order_by(TextSetMember.ordinal)).all()
        texts = get_texts(s, shas)
    return [texts[sha] for sha in shas]
