"""BLEU-4 and CIDEr-D of every candidate of a run, with pycocoevalcap's own scorer classes.

Candidate texts repeat a lot (across iterations, across items), so each distinct text is tokenized
once (the caller's single PTBTokenizer call) and each distinct (item, text) pair is scored once.

BLEU-4: ``BleuScorer`` with each item's references cooked once (``cook_refs``) and each pair's
test cooked against them (``cook_test``), exactly what ``BleuScorer += (test, refs)`` builds;
``compute_score(option='closest')`` as ``Bleu`` calls it gives the per-sentence BLEU-4.

CIDEr-D: its document frequencies and its ``ref_len`` = log(number of images) come from the
evaluated set's references, as for the corpus value. A ``CiderScorer`` is filled with the set's
references and ``compute_doc_freq()`` run once; then batches of at most N (= images in the set)
pairs are scored by ``compute_cider()``, which zips the tests with the references and takes
``ref_len`` from ``len(crefs)``: so ``crefs`` holds the pairs' references, padded to N entries.
A candidate equal to an item's caption thus gets exactly that item's CIDEr.

Each pair's values depend only on the pair and the set's references, so on machines with 4+ CPUs
large jobs are split into chunks scored in parallel processes (CIDEr-D in Python costs about 0.7 ms
per pair on one core).
"""

from __future__ import annotations

import os
from typing import Hashable, Sequence

from tqdm import tqdm

PARALLEL_FROM = 20_000  # pairs; below this, process start-up costs more than it saves
MIN_WORKERS = 4  # CPUs; with fewer, one process is as fast

Pair = tuple[Hashable, str]  # (item, tokenized text)


def bleu4(pairs: Sequence[Pair], refs: dict[Hashable, list[str]], progress: bool = False) -> list[float]:
    """Per-pair BLEU-4 of the tokenized text against the item's tokenized references."""
    from pycocoevalcap.bleu.bleu_scorer import BleuScorer, cook_refs, cook_test

    cooked = {item: cook_refs(rs) for item, rs in refs.items()}
    out: list[float] = []
    chunk = 20_000
    for start in tqdm(range(0, len(pairs), chunk), desc="candidate BLEU-4", unit="chunk", disable=not progress):
        scorer = BleuScorer(n=4)
        part = pairs[start : start + chunk]
        scorer.crefs = [cooked[item] for item, _ in part]
        scorer.ctest = [cook_test(text, cooked[item]) for item, text in part]
        _, per = scorer.compute_score(option="closest", verbose=0)
        out.extend(float(v) for v in per[3])
    return out


def cider_d(pairs: Sequence[Pair], refs: dict[Hashable, list[str]], progress: bool = False) -> list[float]:
    """Per-pair CIDEr-D with the document frequencies of ``refs`` (the whole evaluated set)."""
    from pycocoevalcap.cider.cider_scorer import CiderScorer, cook_test

    scorer = CiderScorer(n=4, sigma=6.0)
    for rs in refs.values():
        scorer.cook_append(None, rs)
    scorer.compute_doc_freq()
    cooked = dict(zip(refs, scorer.crefs))
    size = len(cooked)
    padding = scorer.crefs[:1] * size
    out: list[float] = []
    for start in tqdm(range(0, len(pairs), size), desc="candidate CIDEr-D", unit="batch", disable=not progress):
        part = pairs[start : start + size]
        scorer.ctest = [cook_test(text) for _, text in part]
        scorer.crefs = [cooked[item] for item, _ in part] + padding[len(part):]
        out.extend(float(v) for v in scorer.compute_cider())
    return out


def _score_chunk(args: tuple[Sequence[Pair], dict[Hashable, list[str]]]) -> tuple[list[float], list[float]]:
    pairs, refs = args
    return bleu4(pairs, refs), cider_d(pairs, refs)


def score_pairs(pairs: Sequence[Pair], refs: dict[Hashable, list[str]], progress: bool = False,
                workers: int | None = None) -> tuple[list[float], list[float]]:
    """(BLEU-4, CIDEr-D) of every pair, in parallel processes for large jobs."""
    workers = workers or min(os.cpu_count() or 1, 16)
    # Measured on 2 vCPUs: two processes were no faster than one (30K pairs: 21 s vs 24 s).
    if workers < MIN_WORKERS or len(pairs) < PARALLEL_FROM:
        return bleu4(pairs, refs, progress), cider_d(pairs, refs, progress)
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    size = -(-len(pairs) // (workers * 4))
    chunks = [(list(pairs[i : i + size]), refs) for i in range(0, len(pairs), size)]
    bleu: list[float] = []
    cider: list[float] = []
    # spawn, not fork: the parent may hold threads (progress bars, database pools, torch).
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        for b, c in tqdm(pool.map(_score_chunk, chunks), total=len(chunks), desc="candidate BLEU-4/CIDEr-D",
                         unit="chunk", disable=not progress):
            bleu.extend(b)
            cider.extend(c)
    return bleu, cider
