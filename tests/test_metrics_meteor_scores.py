"""METEOR's scores computed from its statistics in numpy equal what its JVM answers to ``EVAL``.

One METEOR JVM (it loads its tables for a few seconds) scores varied segments: random captions from a
vocabulary of content words, function words, stems and synonyms, and the edge shapes (an empty
caption, an exact copy, nothing in common, one function word, reversed order, repeated words). Its
``EVAL`` answers, per segment and for the corpus and for subsets, are compared with ``meteor_eval``.
"""

from __future__ import annotations

import random
import shutil
from typing import Iterator

import pytest

from capstore.metrics import coco_caption
from capstore.metrics.meteor_scores import FIELDS, meteor_eval, parse_stats

WORDS = ("a the of on in with and dog dogs cat cats running runs run ran man men woman sitting sits "
         "table bench red large big small street car cars riding rides bike horse grass field").split()
EDGES = [(["a dog"], ""), (["a dog runs"], "a dog runs"), (["a dog runs"], "zebra"), (["the"], "the"),
         (["a b c d e f"], "f e d c b a"), (["a dog", "the cat"], "the the the"), (["of of of"], "of"),
         (["a man riding a horse", "a man on a horse in a field"], "a man riding a horse")]


def jvm_eval(job: coco_caption.MeteorJob, stats: list[str]) -> tuple[float, list[float]]:
    """What the JVM answers to ``EVAL ||| stats ...`` (pycocoevalcap's last step)."""
    stdin, stdout = job.process.stdin, job.process.stdout
    assert stdin is not None and stdout is not None
    stdin.write(("EVAL" + "".join(f" ||| {s}" for s in stats) + "\n").encode())
    stdin.flush()
    per = [float(stdout.readline().strip()) for _ in stats]
    return float(stdout.readline().strip()), per


@pytest.fixture(scope="module")
def segments() -> Iterator[tuple[coco_caption.MeteorJob, list[str]]]:
    if shutil.which("java") is None:
        pytest.skip("Java not found on PATH: METEOR needs it")
    rng = random.Random(7)
    pairs = list(EDGES)
    for _ in range(300):
        refs = [" ".join(rng.choices(WORDS, k=rng.randint(1, 12))) for _ in range(rng.randint(1, 5))]
        pairs.append((refs, " ".join(rng.choices(WORDS, k=rng.randint(0, 12)))))
    gts = {k: refs for k, (refs, _) in enumerate(pairs)}
    res = {k: [hyp] for k, (_, hyp) in enumerate(pairs)}
    job = coco_caption.MeteorJob(processes=1)
    try:
        stats = coco_caption._segment_stats(job.process, coco_caption.score_lines(gts, res))
        yield job, stats
    finally:
        job.close()


def test_segment_and_corpus_scores_equal_the_jvms(segments: tuple[coco_caption.MeteorJob, list[str]]) -> None:
    job, stats = segments
    assert parse_stats(stats).shape == (len(stats), FIELDS)
    corpus, per = meteor_eval(stats)
    jvm_corpus, jvm_per = jvm_eval(job, stats)
    assert corpus == pytest.approx(jvm_corpus, abs=1e-15)
    assert per == pytest.approx(jvm_per, abs=1e-15)
    assert jvm_per[:5] == [0.0, 1.0, 0.0, 1.0, per[4]] and 0 < per[4] < 1  # empty, copy, disjoint, one word
    assert len(set(per)) > 100  # varied scores, not a constant


def test_subsets_with_perfect_segments_add_no_chunk(segments: tuple[coco_caption.MeteorJob, list[str]]) -> None:
    """The corpus score of a subset: METEOR's ``addStats`` skips a perfect segment's one chunk."""
    job, stats = segments
    for subset in ([stats[1]], [stats[1], stats[3]], stats[:8], stats[1:2] + stats[10:40], []):
        assert meteor_eval(subset)[0] == pytest.approx(jvm_eval(job, subset)[0] if subset else 0.0, abs=1e-15)


def test_statistics_of_another_shape_are_refused() -> None:
    with pytest.raises(ValueError, match="23"):
        parse_stats(["1 2 3"])
