"""The main acceptance test: ``import-results`` + ``eval`` give exactly what coco-caption computes.

On the 5,000-image Karpathy test split (shared data): the first reference of each image is taken
out and becomes the "caption", the remaining references (20,010) are the dataset's references, so
scores are far from trivial. The reference computation is COCOEvalCap's, written out here with
pycocoevalcap directly: PTBTokenizer on references and captions, then Bleu(4), Meteor, Rouge and
Cider on the tokenized dicts. All 5,000 images: the whole module takes about a minute on 2 cores.
"""

from __future__ import annotations

import json
import shutil
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from capstore.cli.main import cli
from capstore.datasets import add_coco
from capstore.metrics import COCO_METRICS, evaluate_run
from capstore.metrics import java as java_mod
from capstore.metrics.names import reference_implementation
from capstore.results_io import export_results, import_results
from capstore.store import open_store
from capstore.store.schema import Item, MetricValue
from tests.conftest import need_shared


def need_java() -> None:
    if shutil.which("java") is None:
        pytest.skip("Java not found on PATH: PTBTokenizer and METEOR need it")


def coco_eval_cap(gts: dict[Any, list[str]], res: dict[Any, str]) -> tuple[dict[str, float], dict[str, dict[Any, float]]]:
    """COCOEvalCap.evaluate() without SPICE, on plain dicts: corpus values and per-image values."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    tokenizer = PTBTokenizer()
    g = tokenizer.tokenize({k: [{"caption": c} for c in v] for k, v in gts.items()})
    r = tokenizer.tokenize({k: [{"caption": c}] for k, c in res.items()})
    corpus: dict[str, float] = {}
    per: dict[str, dict[Any, float]] = {}
    for scorer, names in ((Bleu(4), ["Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4"]), (Meteor(), "METEOR"),
                          (Rouge(), "ROUGE_L"), (Cider(), "CIDEr")):
        score, scores = scorer.compute_score(g, r)
        if isinstance(names, list):
            for name, sc, scs in zip(names, score, scores):
                corpus[name], per[name] = sc, dict(zip(g.keys(), scs))
        else:
            corpus[names], per[names] = score, dict(zip(g.keys(), scores))
    return corpus, per


@pytest.fixture(scope="module")
def karpathy(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    captions = need_shared("data/coco-karpathy-test/captions_karpathy_test.json")
    need_java()
    data = json.loads(captions.read_text())
    held_out: dict[int, str] = {}
    refs: dict[int, list[str]] = {}
    kept = []
    for ann in data["annotations"]:
        if ann["image_id"] not in held_out:
            held_out[ann["image_id"]] = ann["caption"]
        else:
            kept.append(ann)
            refs.setdefault(ann["image_id"], []).append(ann["caption"])
    tmp = tmp_path_factory.mktemp("karpathy")
    (tmp / "refs.json").write_text(json.dumps({"images": data["images"], "annotations": kept}))
    results = tmp / "results.json"
    results.write_text(json.dumps([{"image_id": i, "caption": c} for i, c in held_out.items()]))
    store = open_store(str(tmp / "store.db"))
    add_coco(store, "karpathy", tmp / "refs.json", captions.parent / "images", allow_missing_images=True)
    run_id, created = import_results(store, results, "karpathy", "first-reference")
    assert created
    evaluated = evaluate_run(store, run_id, clip_scorer=None, progress=False)
    corpus, per = coco_eval_cap(refs, held_out)
    return {"store": store, "run_id": run_id, "result": evaluated, "corpus": corpus, "per": per, "tmp": tmp,
            "results": results}


def test_corpus_values_equal_coco_caption(karpathy: dict[str, Any]) -> None:
    result, expected = karpathy["result"], karpathy["corpus"]
    assert not result.from_store and result.items == 5000
    assert set(result.corpus) == set(COCO_METRICS)
    for metric in COCO_METRICS:
        assert result.corpus[metric] == pytest.approx(expected[metric], abs=1e-9), metric
    assert 0.05 < expected["Bleu_4"] < 0.9 and 0.1 < expected["CIDEr"] < 3  # non-trivial scores
    with karpathy["store"].read() as s:
        stored = dict(s.execute(select(MetricValue.metric, MetricValue.value)
                                .where(MetricValue.run_id == karpathy["run_id"], MetricValue.scope == "corpus")).all())
    assert stored == pytest.approx({m: expected[m] for m in COCO_METRICS}, abs=1e-9)


def test_per_image_values_equal_coco_caption(karpathy: dict[str, Any]) -> None:
    store, run_id, per = karpathy["store"], karpathy["run_id"], karpathy["per"]
    with store.read() as s:
        ext = dict(s.execute(select(Item.id, Item.external_id)).all())
        rows = s.execute(select(MetricValue.metric, MetricValue.item_id, MetricValue.value, MetricValue.implementation)
                         .where(MetricValue.run_id == run_id, MetricValue.scope == "item")).all()
    assert len(rows) == 5000 * len(COCO_METRICS)
    values = {(m, int(ext[i])): v for m, i, v, _ in rows}
    assert {impl for m, _, _, impl in rows} == {reference_implementation(m) for m in COCO_METRICS}
    for metric in COCO_METRICS:
        for image_id in per[metric]:
            assert values[(metric, image_id)] == pytest.approx(per[metric][image_id], abs=1e-9), (metric, image_id)


def test_second_eval_comes_from_the_store(karpathy: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    def no_tokenizer(*_a: object, **_k: object) -> list[str]:
        raise AssertionError("recomputed")

    monkeypatch.setattr(java_mod, "ptb_tokenize", no_tokenizer)
    monkeypatch.setattr("capstore.metrics.text_tokens.ptb_tokenize", no_tokenizer)
    again = evaluate_run(karpathy["store"], karpathy["run_id"], clip_scorer=None, progress=False)
    assert again.from_store and again.computed == []
    assert again.corpus == karpathy["result"].corpus
    with karpathy["store"].read() as s:
        assert s.scalar(select(func.count()).select_from(MetricValue)) == 5000 * 7 + 7


def test_export_round_trip_and_reimport(karpathy: dict[str, Any]) -> None:
    out = karpathy["tmp"] / "exported.json"
    assert export_results(karpathy["store"], karpathy["run_id"], out) == 5000
    exported = json.loads(out.read_text())
    original = json.loads(karpathy["results"].read_text())
    assert sorted(exported, key=lambda e: e["image_id"]) == sorted(original, key=lambda e: e["image_id"])
    assert all(isinstance(e["image_id"], int) for e in exported)
    assert import_results(karpathy["store"], karpathy["results"], "karpathy", "first-reference") == (karpathy["run_id"], False)


def test_cli_eval_prints_the_table(karpathy: dict[str, Any]) -> None:
    db = karpathy["store"].url.replace("sqlite:///", "")
    out = CliRunner().invoke(cli, ["eval", str(karpathy["run_id"]), "--no-clipscore", "--quiet", "--db", db])
    assert out.exit_code == 0, out.output
    assert "all values from the store" in out.output
    assert f"CIDEr         {karpathy['corpus']['CIDEr']:.4f}" in out.output
    assert "SPICE unavailable: needs Stanford CoreNLP" in out.output
