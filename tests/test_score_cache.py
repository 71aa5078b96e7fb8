"""Generated candidates' scores are cached by (scorer, medium, text); their embeddings are not.

A COCO-5K MILS run cached 1.72M generated texts' embeddings (7.9 GB, half the engine's store time)
that only a rerun reads back; the rerun needs their scores, which the score cache keeps exactly.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
from click.testing import CliRunner
from sqlalchemy import event, select

from capstore.backends.caching import get_scores, put_scores
from capstore.backends.registry import load_backend
from capstore.backends import score_cache
from capstore.backends.score_cache import batch_scores, score_texts
from capstore.cli.main import cli
from capstore.store.content import sha256_text
from capstore.store.engine import Store
from capstore.store.schema import Candidate, EmbeddingCache, Item, Model, ScoreCache, UsageEvent
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
    put_scores(store, first, {key: 5.0 for key in list(scores)[:10]})  # an existing pair keeps its score
    wanted = list(scores) + [(sha256_text("m0"), sha256_text("never scored"))]
    assert get_scores(store, first, wanted) == scores  # every double back to the bit; the unknown pair absent
    assert get_scores(store, other, wanted) == {}  # another scorer's scores are its own
    pair = next(iter(scores))
    assert get_scores(store, first, [(pair[1], pair[0])]) == {}  # (medium, text), not either way round


def test_a_lookup_searches_the_whole_key_on_sqlite(sqlite_url: str) -> None:
    """A row-value ``IN`` searched SQLite's key by model only: every lookup scanned the scorer's every
    score, so a 2.5M-candidate run slowed down as it went."""
    from capstore.store import open_store

    store = open_store(sqlite_url)
    model = _model(store, "a")
    put_scores(store, model, {(sha256_text("m"), sha256_text("t")): 0.5})
    seen: list[tuple[str, object]] = []
    event.listen(store.engine, "before_cursor_execute",
                 lambda conn, cursor, statement, params, context, many: seen.append((statement, params)))
    pair = (sha256_text("m"), sha256_text("t"))
    assert get_scores(store, model, [pair]) == {pair: 0.5}
    statement, params = next((st, pa) for st, pa in seen if "score_cache" in st)
    with store.engine.connect() as conn:
        plan = " ".join(row[-1] for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", params))
    assert "SEARCH s USING" in plan and "(model_id=? AND image_sha=? AND text_sha=?)" in plan, plan
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
        cached = {(r.image_sha, r.text_sha): r.score for r in s.scalars(select(ScoreCache))}
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


def test_a_batch_asks_the_store_only_for_media_scored_before_it(demo_store, tiny_models,  # type: ignore[no-untyped-def]
                                                               monkeypatch) -> None:
    """A medium with no stored score when the batch begins can only be scored by the batch: its pairs
    come from the batch's memory (a repeated text is not encoded again), the store is not asked."""
    scorer = load_backend("scorer", tiny_models.specs["scorer"], demo_store, device="cpu")
    images = demo_images(demo_store, 2)
    vectors = scorer.encode_images(images)
    (old, old_vec), (new, new_vec) = [(im.sha256, vec) for im, vec in zip(images, vectors)]
    put_scores(demo_store, scorer.model_id, {(old, sha256_text("a stored pair")): 0.25})
    asked: list[list[tuple[str, str]]] = []
    real = score_cache.get_scores
    monkeypatch.setattr(score_cache, "get_scores", lambda store, model, pairs: asked.append(list(pairs)) or
                        real(store, model, pairs))
    batch = batch_scores(demo_store, scorer.model_id, [old, new])
    assert batch.fresh == {new}
    first = score_texts(demo_store, scorer, [(old, old_vec), (new, new_vec)],
                        [["a stored pair", "a cat"], ["a cat", "a dog"]], batch=batch)
    assert first[0]["a stored pair"] == 0.25
    assert asked == [[(old, sha256_text("a stored pair")), (old, sha256_text("a cat"))]]  # not the fresh medium's
    encoded: list[list[str]] = []
    encode = scorer.encode_texts
    scorer.encode_texts = lambda texts, ctx=None, cache=True: encoded.append(list(texts)) or encode(texts, cache=cache)
    asked.clear()
    second = score_texts(demo_store, scorer, [(new, new_vec)], [["a dog", "a bird"]], batch=batch)
    assert encoded == [["a bird"]] and asked == []  # "a dog" from the batch's memory
    assert second[0]["a dog"] == first[1]["a dog"]
    assert get_scores(demo_store, scorer.model_id, [(new, sha256_text("a bird"))])  # and stored for a resume
