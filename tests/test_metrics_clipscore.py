"""CLIPScore and RefCLIPScore with the tiny CLIP: stored values follow the paper's formula on the
scorer's own embeddings; a second eval loads no model; a scorer that cannot load is one line."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from sqlalchemy import select

from capstore.backends.registry import load_backend
from capstore.metrics import evaluate_run
from capstore.metrics import clipscore as clip_mod
from capstore.store.engine import Store
from capstore.store.images import read_image
from capstore.store.schema import Caption, Item, MetricValue, Reference, Text, UsageEvent
from tests.test_metrics_store import demo_run, fake_meteor  # noqa: F401 - fixtures

pytestmark = pytest.mark.skipif(shutil.which("java") is None, reason="Java not found on PATH: PTBTokenizer needs it")


def _expected(store: Store, run_id: int, spec: str) -> dict[int, tuple[float, float]]:
    """CLIPScore and RefCLIPScore per item, straight from the paper's definition."""
    scorer = load_backend("scorer", spec, store)
    out = {}
    with store.read() as s:
        items = s.execute(select(Caption.item_id, Text.text, Item.image_sha).join(Text, Text.sha256 == Caption.text_sha)
                          .join(Item, Item.id == Caption.item_id).where(Caption.run_id == run_id)).all()
        for item_id, caption, image_sha in items:
            refs = s.scalars(select(Text.text).join(Reference, Reference.text_sha == Text.sha256)
                             .where(Reference.item_id == item_id)).all()
            v = scorer.encode_images([read_image(s, image_sha)])[0].astype(np.float64)
            c = scorer.encode_texts(["A photo depicts " + caption])[0].astype(np.float64)
            r = scorer.encode_texts(["A photo depicts " + t for t in refs]).astype(np.float64)
            v, c = v / np.linalg.norm(v), c / np.linalg.norm(c)
            r = r / np.linalg.norm(r, axis=1, keepdims=True)
            clip = 2.5 * max(float(v @ c), 0.0)
            text = max(float(np.max(r @ c)), 0.0)
            out[item_id] = (clip, 2 * clip * text / (clip + text) if clip + text > 0 else 0.0)
    return out


def test_clipscore_follows_the_formula_and_is_reused(store: Store, demo_run: int, fake_meteor: None,  # noqa: F811
                                                     tiny_models, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    spec = tiny_models.specs["scorer"]
    result = evaluate_run(store, demo_run, clip_scorer=spec, device="cpu", progress=False)
    assert {"CLIPScore", "RefCLIPScore", "CIDEr"} <= set(result.corpus)
    expected = _expected(store, demo_run, spec)
    with store.read() as s:
        rows = s.execute(select(MetricValue.metric, MetricValue.scope, MetricValue.item_id, MetricValue.value,
                                MetricValue.implementation, MetricValue.details)
                         .where(MetricValue.run_id == demo_run, MetricValue.metric.in_(["CLIPScore", "RefCLIPScore"]))).all()
        run_usage = s.scalars(select(UsageEvent.stage).where(UsageEvent.run_id == demo_run)).all()
        eval_usage = s.scalars(select(UsageEvent.images).where(UsageEvent.stage == "eval")).all()
    assert len(rows) == 2 * 25 and run_usage == []  # evaluating is not the method's cost
    assert sum(eval_usage) == 24  # the images were encoded, recorded as stage "eval"
    for metric, k in (("CLIPScore", 0), ("RefCLIPScore", 1)):
        per = {i: v for m, scope, i, v, _, _ in rows if m == metric and scope == "item"}
        assert per == pytest.approx({i: e[k] for i, e in expected.items()}, abs=1e-6)
        corpus = [(v, impl, d) for m, scope, _, v, impl, d in rows if m == metric and scope == "corpus"]
        assert len(corpus) == 1
        value, impl, details = corpus[0]
        assert value == pytest.approx(np.mean([e[k] for e in expected.values()]), abs=1e-6)
        assert result.corpus[metric] == pytest.approx(value)
        assert impl == f"capstore-clipscore-1/{spec}"
        assert details["scorer"] == spec and "2.5*max(cos(image, caption), 0)" in details["formula"]
        assert details["prefix"] == "A photo depicts " and len(details["model_fingerprint"]) == 64
    assert max(e[0] for e in expected.values()) > 0  # not all clipped to zero

    def no_model(*_a: object, **_k: object) -> None:
        raise AssertionError("the scorer was loaded")

    monkeypatch.setattr(clip_mod, "load_scorer", no_model)
    again = evaluate_run(store, demo_run, clip_scorer=spec, progress=False)
    assert again.from_store and again.corpus == result.corpus


def test_scorer_that_cannot_load_is_one_line(store: Store, demo_run: int, fake_meteor: None, tmp_path) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    if store.dialect != "sqlite":
        pytest.skip("scorer loading does not depend on the database")
    empty = tmp_path / "no-weights"
    empty.mkdir()
    result = evaluate_run(store, demo_run, clip_scorer=f"open_clip:{empty}", progress=False)
    reason = result.unavailable["CLIPScore"]
    assert reason.startswith(f"scorer open_clip:{empty} cannot be loaded (") and reason.endswith("or --no-clipscore")
    assert "\n" not in reason and result.unavailable["RefCLIPScore"] == reason
    assert "CIDEr" in result.corpus and "CLIPScore" not in result.corpus
    with store.read() as s:
        assert not s.scalars(select(MetricValue.id).where(MetricValue.metric == "CLIPScore")).all()
