"""METEOR 1.5's scores from its segment statistics: what its ``EVAL`` command computes, in numpy.

METEOR's JVM aligns each hypothesis with its references (``SCORE`` lines) and answers a line of
statistics; an ``EVAL`` line of all of them then gives each segment's score and the corpus score.
That last step is a few floating-point operations per segment, but METEOR parses every statistic with
a ``java.util.Scanner`` (1.1-2.3 s for 5,000 segments here, on METEOR's critical path; numpy: a few
ms). So it is done here, with METEOR 1.5's own operations in its own order
(``MeteorStats(String)``, ``MeteorStats.addStats`` and ``MeteorScorer.computeMetrics`` of
meteor-1.5.jar) and its parameters for ``-l en`` (its header: ``Parameters: 0.85 0.2 0.6 0.75``,
``Weights: 1.0 0.6 0.8 0.6``). IEEE arithmetic as in Java: a 0/0 is NaN and scores 0.
``tests/test_metrics_meteor_scores.py`` compares every value with the JVM's ``EVAL`` answer.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

ALPHA, BETA, GAMMA, DELTA = 0.85, 0.2, 0.6, 0.75
WEIGHTS = (1.0, 0.6, 0.8, 0.6)  # exact, stem, synonym, paraphrase
STAGES = len(WEIGHTS)
# A statistics line: test and reference lengths, their function words, then per stage the test's and
# the reference's content matches and function-word matches, then chunks and the word matches.
FIELDS = 4 + 4 * STAGES + 3
_TC, _RC, _TF, _RF = (slice(4 + k, 4 + 4 * STAGES, 4) for k in range(4))
_CHUNKS, _TEST_WORDS, _REF_WORDS = FIELDS - 3, FIELDS - 2, FIELDS - 1


def parse_stats(lines: Sequence[str]) -> np.ndarray:
    """The statistics lines METEOR answered to ``SCORE`` lines, as an (n, 23) array."""
    rows = [[float(v) for v in line.split()] for line in lines]
    for row in rows:
        if len(row) != FIELDS:
            raise ValueError(f"METEOR statistics of {len(row)} values, expected {FIELDS}")
    return np.array(rows, dtype=np.float64).reshape(len(rows), FIELDS)


def segment_scores(stats: np.ndarray) -> np.ndarray:
    """Each row's score (``MeteorScorer.computeMetrics``)."""
    test_len, ref_len, test_fun, ref_fun = (stats[:, k] for k in range(4))
    tc, rc, tf, rf = stats[:, _TC], stats[:, _RC], stats[:, _TF], stats[:, _RF]
    with np.errstate(all="ignore"):
        test_weighted_len = DELTA * (test_len - test_fun) + (1 - DELTA) * test_fun
        ref_weighted_len = DELTA * (ref_len - ref_fun) + (1 - DELTA) * ref_fun
        test_matches = np.zeros(len(stats))
        ref_matches = np.zeros(len(stats))
        for i, w in enumerate(WEIGHTS):  # content words first, then function words, as METEOR sums them
            test_matches = test_matches + tc[:, i] * w * DELTA
            ref_matches = ref_matches + rc[:, i] * w * DELTA
        for i, w in enumerate(WEIGHTS):
            test_matches = test_matches + tf[:, i] * w * (1 - DELTA)
            ref_matches = ref_matches + rf[:, i] * w * (1 - DELTA)
        precision = test_matches / test_weighted_len
        recall = ref_matches / ref_weighted_len
        f_mean = 1.0 / ((1 - ALPHA) / precision + ALPHA / recall)
        chunks = stats[:, _CHUNKS]
        frag = np.where(_perfect(stats), 0.0, chunks / ((stats[:, _TEST_WORDS] + stats[:, _REF_WORDS]) / 2.0))
        score = f_mean * (1 - GAMMA * np.power(frag, BETA))
    return np.where(np.isnan(score), 0.0, np.maximum(score, 0.0))


def _perfect(stats: np.ndarray) -> np.ndarray:
    """Rows whose every word matched, in one chunk (METEOR gives them no fragmentation)."""
    test_total = (stats[:, _TC] + stats[:, _TF]).sum(axis=1)  # whole numbers: exact in any order
    ref_total = (stats[:, _RC] + stats[:, _RF]).sum(axis=1)
    return (test_total == stats[:, 0]) & (ref_total == stats[:, 1]) & (stats[:, _CHUNKS] == 1)


def corpus_stats(stats: np.ndarray) -> np.ndarray:
    """All rows added up as ``MeteorStats.addStats`` does: a perfectly matched segment adds no chunk."""
    total = stats.sum(axis=0)  # counts: whole numbers, so any order of addition gives the same sums
    total[_CHUNKS] = stats[~_perfect(stats), _CHUNKS].sum()
    return total.reshape(1, -1)


def meteor_eval(lines: Sequence[str]) -> tuple[float, list[float]]:
    """What METEOR answers to ``EVAL ||| <lines>``: the corpus score and each segment's score."""
    stats = parse_stats(lines)
    corpus = float(segment_scores(corpus_stats(stats))[0]) if len(stats) else 0.0
    return corpus, [float(v) for v in segment_scores(stats)]
