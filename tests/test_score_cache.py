"""Generated candidates' scores are cached by (scorer, medium, text); their embeddings are not.

A COCO-5K MILS run cached 1.72M generated texts' embeddings (7.9 GB, half the engine's store time)
that only a rerun reads back; the rerun needs their scores, which the score cache keeps exactly.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
from click.testing import CliRunner
from sqlalchemy import event, func, select

from capstore.backends.caching import get_media_scores, get_scores, put_scores
from capstore.backends.registry import load_backend
from capstore.backends import score_cache
from capstore.backends.score_cache import batch_scores, score_texts
from capstore.cli.main import cli
from capstore.store.content import sha256_text
from capstore.store.engine import Store
from capstore.store.schema import Candidate, EmbeddingCache, Item, Model, ScoreSet, UsageEvent
from tests.conftest import demo_images
from tests.run_helpers import mils_args


def _model(store: Store, name: str) -> int:
    with store.write() as s:
        model = Model(fingerprint=sha256_text(name), kind="scorer", backend="bench", name=name, config={})
        s.add(model)
        s.flush()
        return model.id


def test_scores_round_trip_exactly_across_chunks_on_each_database(store: Store) -> None:
    first, other = _model(store, "a"), _model(store, "b")
    rng = random.Random(7)
    scores = {(sha256_text(f"m{i % 40}"), sha256_text(f"t{i}")): rng.uniform(-1, 1) for i in range(6_001)}
    put_scores(store, first, scores)
    with store.read() as s:
        assert s.scalar(select(func.count()).select_from(ScoreSet)) == 40  # one row a medium, not a pair
    put_scores(store, first, {key: 5.0 for key in list(scores)[:10]})  # an existing pair keeps its first score
    wanted = list(scores) + [(sha256_text("m0"), sha256_text("never scored"))]
    assert get_scores(store, first, wanted) == scores  # every double back to the bit; the unknown pair absent
    assert get_scores(store, other, wanted) == {}  # another scorer's scores are its own
    pair = next(iter(scores))
    assert get_scores(store, first, [(pair[1], pair[0])]) == {}  # (medium, text), not either way round


def test_a_lookup_reads_the_mediums_sets_by_index_on_sqlite(sqlite_url: str) -> None:
    """A lookup finds a medium's score sets through the (model, medium) index: a scan of the scorer's
    every set per lookup would slow a 2.5M-candidate run down as it went."""
    from capstore.store import open_store

    store = open_store(sqlite_url)
    model = _model(store, "a")
    put_scores(store, model, {(sha256_text("m"), sha256_text("t")): 0.5})
    seen: list[tuple[str, object]] = []
    event.listen(store.engine, "before_cursor_execute",
                 lambda conn, cursor, statement, params, context, many: seen.append((statement, params)))
    pair = (sha256_text("m"), sha256_text("t"))
    assert get_scores(store, model, [pair]) == {pair: 0.5}
    statement, params = next((st, pa) for st, pa in seen if "score_sets" in st)
    with store.engine.connect() as conn:
        plan = " ".join(row[-1] for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", params))
    assert "USING INDEX ix_score_sets_model_image (model_id=? AND image_sha=?)" in plan, plan
    store.dispose()


def _generated_only(store: Store, run_id: int) -> set[str]:
    with store.read() as s:
        generated = set(s.scalars(select(Candidate.text_sha).where(Candidate.run_id == run_id,
                                                                   Candidate.origin == "generated")))
        other = set(s.scalars(select(Candidate.text_sha).where(Candidate.run_id == run_id,
                                                               Candidate.origin != "generated")))
    return generated - other


def test_a_mils_run_caches_generated_scores_not_embeddings_and_a_rerun_replays_them(  # type: ignore[no-untyped-def]
        demo_store, tiny_models, tmp_path: Path) -> None:
    db = str(demo_store.url).replace("sqlite:///", "")
    args = [*mils_args(tmp_path, tiny_models.specs["scorer"], iterations=2, extra=("--limit", "3", "--device", "cpu")),
            "--db", db]
    first = CliRunner().invoke(cli, args)
    assert first.exit_code == 0, first.output
    generated = _generated_only(demo_store, 1)
    assert generated, "the tiny generator proposed no new text: the test would prove nothing"
    with demo_store.read() as s:
        embedded = set(s.scalars(select(EmbeddingCache.content_sha).where(EmbeddingCache.content_kind == "text")))
        rows = s.execute(select(Candidate.text_sha, Candidate.score, Item.image_sha, Candidate.iteration)
                         .join(Item, Item.id == Candidate.item_id)
                         .where(Candidate.run_id == 1, Candidate.origin == "generated")).all()
        model_id, media = s.scalar(select(ScoreSet.model_id)), set(s.scalars(select(ScoreSet.image_sha)))
    cached = get_media_scores(demo_store, model_id, media)
    assert not generated & embedded  # no vector stored for a text only ever generated
    assert embedded  # the pool's are
    assert {(image, sha): score for sha, score, image, _ in rows} == cached  # every generated pair, exactly

    second = CliRunner().invoke(cli, args)
    assert second.exit_code == 0 and "made 0 model calls: everything came from the caches" in second.output
    with demo_store.read() as s:
        again = sorted(s.execute(select(Candidate.item_id, Candidate.iteration, Candidate.text_sha, Candidate.score)
                                 .where(Candidate.run_id == 2, Candidate.origin == "generated")).all())
        hits = s.execute(select(UsageEvent.items, UsageEvent.cached, UsageEvent.calls).where(
            UsageEvent.run_id == 2, UsageEvent.stage == "encode_text")).all()
    with demo_store.read() as s:
        first_rows = sorted(s.execute(select(Candidate.item_id, Candidate.iteration, Candidate.text_sha,
                                             Candidate.score).where(Candidate.run_id == 1,
                                                                    Candidate.origin == "generated")).all())
    assert again == first_rows  # the same scores to the bit, from the cache
    assert hits and all(calls == 0 and items == cached for items, cached, calls in hits)


def test_only_texts_with_a_missing_pair_are_encoded_and_none_is_cached(  # type: ignore[no-untyped-def]
        demo_store, tiny_models) -> None:
    scorer = load_backend("scorer", tiny_models.specs["scorer"], demo_store, device="cpu")
    images = demo_images(demo_store, 2)
    vectors = scorer.encode_images(images)
    media = [(im.sha256, vec) for im, vec in zip(images, vectors)]
    asked: list[tuple[list[str], bool]] = []
    encode = scorer.encode_texts

    def spy(texts, ctx=None, cache=True):  # type: ignore[no-untyped-def]
        asked.append((list(texts), cache))
        return encode(texts, ctx, cache) if ctx is not None else encode(texts, cache=cache)

    scorer.encode_texts = spy
    first = score_texts(demo_store, scorer, media, [["a red circle", "a blue square"], ["a blue square"]])
    assert asked == [(["a blue square", "a red circle"], False)]  # sorted, once each, not cached
    direct = encode(["a blue square", "a red circle"], cache=False)
    assert np.isclose(first[0]["a red circle"], direct[1] @ vectors[0], atol=1e-6)
    assert np.isclose(first[1]["a blue square"], direct[0] @ vectors[1], atol=1e-6)

    asked.clear()
    second = score_texts(demo_store, scorer, media, [["a blue square", "a green line"], ["a red circle"]])
    assert asked == [(["a green line", "a red circle"], False)]  # "a red circle" is new for the second image
    assert second[0]["a blue square"] == first[0]["a blue square"]  # read back, to the bit
    asked.clear()
    assert score_texts(demo_store, scorer, media, [["a green line"], ["a red circle"]]) == [
        {"a green line": second[0]["a green line"]}, {"a red circle": second[1]["a red circle"]}]
    assert asked == []  # every pair cached: no model call
    with demo_store.read() as s:
        assert s.scalar(select(EmbeddingCache.content_sha).where(EmbeddingCache.content_kind == "text")) is None


def test_a_batch_reads_its_media_scores_once_and_its_calls_ask_the_store_nothing(  # type: ignore[no-untyped-def]
        demo_store, tiny_models, monkeypatch) -> None:
    """A batch reads every stored score of its media when it begins; then its pairs come from its
    memory (a repeated text is not encoded again) and the store is not asked, and what it computes
    is stored for a resume."""
    scorer = load_backend("scorer", tiny_models.specs["scorer"], demo_store, device="cpu")
    images = demo_images(demo_store, 2)
    vectors = scorer.encode_images(images)
    (old, old_vec), (new, new_vec) = [(im.sha256, vec) for im, vec in zip(images, vectors)]
    put_scores(demo_store, scorer.model_id, {(old, sha256_text("a stored pair")): 0.25})
    asked: list[list[str]] = []
    real = score_cache.get_media_scores
    monkeypatch.setattr(score_cache, "get_media_scores", lambda store, model, media: asked.append(sorted(media)) or
                        real(store, model, media))
    batch = batch_scores(demo_store, scorer.model_id, [old, new])
    assert asked == [sorted([old, new])] and batch.seen == {(old, sha256_text("a stored pair")): 0.25}
    asked.clear()
    first = score_texts(demo_store, scorer, [(old, old_vec), (new, new_vec)],
                        [["a stored pair", "a cat"], ["a cat", "a dog"]], batch=batch)
    assert first[0]["a stored pair"] == 0.25 and asked == []
    encoded: list[list[str]] = []
    encode = scorer.encode_texts
    scorer.encode_texts = lambda texts, ctx=None, cache=True: encoded.append(list(texts)) or encode(texts, cache=cache)
    second = score_texts(demo_store, scorer, [(new, new_vec)], [["a dog", "a bird"]], batch=batch)
    assert encoded == [["a bird"]] and asked == []  # "a dog" from the batch's memory
    assert second[0]["a dog"] == first[1]["a dog"]
    assert get_scores(demo_store, scorer.model_id, [(new, sha256_text("a bird")), (old, sha256_text("a cat"))]) == {
        (new, sha256_text("a bird")): second[0]["a bird"], (old, sha256_text("a cat")): first[0]["a cat"]}
    assert score_texts(demo_store, scorer, [(new, new_vec)], [["a bird"]]) == [{"a bird": second[0]["a bird"]}]
    assert asked == [[new]] and encoded == [["a bird"]]  # no batch: the call reads its media's scores itself
