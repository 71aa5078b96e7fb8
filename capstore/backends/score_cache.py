"""Scores of (medium, text) pairs, cached by (scorer, medium sha, text sha).

MILS scores each generated candidate against one medium only. Caching those texts' embeddings (a
1152-float SigLIP vector each, 4.6 KB) cost a COCO-5K run 7.9 GB and half of the engine's store time
(``benchmarks/README.md``, full-size rehearsal), to be read back only by a rerun, which needs the
scores, not the vectors: a score is one double beside its two shas. Texts scored against many media
(the pool, seeds, references) keep their embeddings cached instead. A call's scores of one medium
are stored as one row (``ScoreSet``), not one row a pair.

A worker's batch reads every stored score of its media once, when it begins (``BatchScores``), and
adds the scores it computes: it holds its items, so no one else scores their media meanwhile (but
another run on the same media, whose new scores this batch then computes again). Its iterations ask
the store nothing: in a fresh run the one read finds nothing, and on PostgreSQL under a run's writes
a lookup took ~50 ms. A resumed or repeated run finds its media's scores stored: the same values, to
the bit, as the batch that first computed them used.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Sequence

import numpy as np

from capstore.backends.base import CallContext
from capstore.backends.caching import get_media_scores, put_scores
from capstore.backends.usage import record_usage
from capstore.store.content import sha256_text
from capstore.store.engine import Store


@dataclass
class BatchScores:
    """The scores a batch knows, by (medium sha, text sha): its media's stored ones when it began,
    and those it computed since."""

    seen: dict[tuple[str, str], float] = field(default_factory=dict)


def batch_scores(store: Store, model_id: int, media: Sequence[str]) -> BatchScores:
    """A batch's memory of scores, for a batch of ``media`` (shas) scored by ``model_id``."""
    return BatchScores(get_media_scores(store, model_id, media))


def score_texts(store: Store, scorer: Any, media: Sequence[tuple[str, np.ndarray]],
                texts: Sequence[Sequence[str]], ctx: CallContext = CallContext(),
                batch: BatchScores | None = None) -> list[dict[str, float]]:
    """For each medium ``(sha, embedding)`` the scores of its ``texts`` (text -> cosine).

    Known pairs are read back: from ``batch`` (whose media these must be), else from the store; the
    texts of the other pairs are embedded in one call, sorted and uncached (the same call, in the
    same order, as a fresh run makes), and their scores stored. A usage event counts the texts every
    pair of which was known. Both writes go through ``ctx.store_write`` (a MILS worker commits them
    beside its steps)."""
    start = time.perf_counter()
    memo = batch if batch is not None else batch_scores(store, scorer.model_id, [sha for sha, _ in media])
    shas = {t: sha256_text(t) for group in texts for t in group}
    # Every (medium, text) asked for, with the medium's embedding: walked once, filtered below.
    asked = {(sha, shas[t]): (t, vector) for (sha, vector), group in zip(media, texts) for t in group}
    found = {pair: memo.seen[pair] for pair in asked if pair in memo.seen}
    lookup_seconds = time.perf_counter() - start  # the encode call records its own time
    unknown = {pair: tv for pair, tv in asked.items() if pair not in found}
    missing = sorted({t for t, _ in unknown.values()})
    if missing:
        emb = scorer.encode_texts(missing, ctx, cache=False)
        row = {t: i for i, t in enumerate(missing)}
        new = {pair: float(emb[row[t]] @ vector) for pair, (t, vector) in unknown.items()}
        ctx.store_write(partial(put_scores, store, scorer.model_id, new))
        found.update(new)
        memo.seen.update(new)
    served = len(shas) - len(missing)
    if served:
        device = str(getattr(scorer, "device", "cpu"))
        ctx.store_write(partial(
            record_usage, store, run_id=ctx.run_id, stage=ctx.stage or "encode_text", model_id=scorer.model_id,
            device_type=device.split(":")[0], device_name=getattr(scorer, "device_name", None),
            wall_seconds=lookup_seconds, items=served, calls=0, cached=served, worker=ctx.worker))
    return [{t: found[(sha, shas[t])] for t in group} for (sha, _), group in zip(media, texts)]
