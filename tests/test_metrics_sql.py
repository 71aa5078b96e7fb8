"""BLEU-1..4 and CIDEr-D computed by the shipped DuckDB queries equal pycocoevalcap to 1e-9, on SQLite and
PostgreSQL, for every per-item, corpus and per-candidate value.

On the Karpathy test references (shared data; the first 300 images), four kinds of results files:
each image's first reference (the references are the other four), another image's caption, edge
shapes (one word, punctuation only, repeated words, ``|||``, non-ASCII, a long caption), and a copy
of one of the image's own references. The reference computation is pycocoevalcap's own: its
PTBTokenizer, then Bleu(4), Cider and Rouge on the tokenized dicts, as COCOEvalCap calls them.
Candidates: a run whose candidates are variants of the references, every distinct (item, text)
pair scored by pycocoevalcap's BleuScorer and CiderScorer with the evaluated set's document
frequencies. METEOR is left to ``test_metrics_coco`` (its JVM takes seconds): here a stand-in.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import String, cast, literal, select

from capstore.analysis.queries import load_query, run_query
from capstore.datasets.importer import ItemSpec, write_split
from capstore.metrics import evaluate_run
from capstore.metrics.names import BLEU, CIDER, ROUGE_L
from capstore.results_io import import_results
from capstore.store import Store, open_store
from capstore.metrics.store_values import stored_candidate_values
from capstore.store.schema import (CANDIDATE_METRIC_COLUMNS, Candidate, CandidateEval, CandidateEvalValue, Item,
                                   MetricValue)
from tests.conftest import make_pg_url, need_shared
from tests.test_metrics_store import fake_meteor  # noqa: F401 - fixture

pytestmark = pytest.mark.skipif(shutil.which("java") is None, reason="Java not found on PATH: PTBTokenizer needs it")
IMAGES = 300
EDGE = ["a", "dog", "A A A A A A A A", "!!!", "a ||| b", "Ein Hund läuft über die Straße, naïve café.",
        "The dog's owner's car is parked near 3 (three) trees.", " ".join(["a big red bus"] * 12), "UPPER CASE WORDS"]


def pycoco(gts: dict[Any, list[str]], res: dict[Any, str]) -> tuple[dict[str, float], dict[str, dict[Any, float]]]:
    """COCOEvalCap's BLEU, ROUGE-L and CIDEr-D on raw texts: corpus and per-image values."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    tok = PTBTokenizer()
    g = tok.tokenize({k: [{"caption": c} for c in v] for k, v in gts.items()})
    r = tok.tokenize({k: [{"caption": c}] for k, c in res.items()})
    corpus: dict[str, float] = {}
    per: dict[str, dict[Any, float]] = {}
    score, scores = Bleu(4).compute_score(g, r, verbose=0)
    for name, sc, scs in zip(BLEU, score, scores):
        corpus[name], per[name] = sc, dict(zip(g, scs))
    for name, scorer in ((ROUGE_L, Rouge()), (CIDER, Cider())):
        sc, scs = scorer.compute_score(g, r)
        corpus[name], per[name] = float(sc), dict(zip(g, scs))
    return corpus, per


@pytest.fixture(scope="module")
def karpathy_refs() -> dict[int, list[str]]:
    data = json.loads(need_shared("data/coco-karpathy-test/captions_karpathy_test.json").read_text())
    refs: dict[int, list[str]] = {}
    for ann in data["annotations"]:
        refs.setdefault(ann["image_id"], []).append(ann["caption"])
    return {i: refs[i] for i in sorted(refs)[:IMAGES]}


def results_kinds(refs: dict[int, list[str]]) -> dict[str, tuple[dict[int, list[str]], dict[int, str]]]:
    """(references kept in the dataset, captions) for each kind of results file."""
    held = {i: rs[1:] for i, rs in refs.items()}
    ids = list(refs)
    rng = random.Random(0)
    return {
        "first_reference": (held, {i: rs[0] for i, rs in refs.items()}),
        "another_image": (held, {i: refs[ids[(k + 1) % len(ids)]][0] for k, i in enumerate(ids)}),
        "edge_shapes": (held, {i: EDGE[k % len(EDGE)] if k % 3 else rng.choice(refs[i]) for k, i in enumerate(ids)}),
        "own_reference": (held, {i: rs[1] for i, rs in refs.items()}),
    }


def make_store(db: str, refs: dict[int, list[str]]) -> Store:
    store = open_store(db)
    specs = [ItemSpec(external_id=str(i), references=[(t, None) for t in rs]) for i, rs in refs.items()]
    write_split(store, "karpathy", "test", "test", specs, allow_missing=True)
    return store


def stored_values(store: Store, run_id: int, scope: str) -> dict[tuple[str, Any], float]:
    if scope == "candidate":  # typed columns of candidate_eval_values (migration 0006)
        return {k: v for k, (v, _) in stored_candidate_values(store, run_id).items()}
    key = MetricValue.item_id
    with store.read() as s:
        ext = dict(s.execute(select(Item.id, Item.external_id)).all())
        rows = s.execute(select(MetricValue.metric, key, MetricValue.value)
                         .where(MetricValue.run_id == run_id, MetricValue.scope == scope)).all()
    if scope == "item":
        return {(m, int(ext[k])): v for m, k, v in rows}
    return {(m, k): v for m, k, v in rows}


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db(request: pytest.FixtureRequest, tmp_path: Path):  # type: ignore[no-untyped-def]
    if request.param == "sqlite":
        yield str(tmp_path / "store.db")
    else:
        yield from make_pg_url()


@pytest.mark.parametrize("kind", ["first_reference", "another_image", "edge_shapes", "own_reference"])
def test_caption_metrics_equal_pycocoevalcap(db: str, tmp_path: Path, karpathy_refs: dict[int, list[str]], kind: str,
                                             fake_meteor: None) -> None:  # noqa: F811
    held, captions = results_kinds(karpathy_refs)[kind]
    store = make_store(db, held)
    try:
        results = tmp_path / "results.json"
        results.write_text(json.dumps([{"image_id": i, "caption": c} for i, c in captions.items()]))
        run_id, _ = import_results(store, results, "karpathy", kind)
        got = evaluate_run(store, run_id, clip_scorer=None, progress=False)
        corpus, per = pycoco(held, captions)
        values = stored_values(store, run_id, "item")
        for metric in (*BLEU, ROUGE_L, CIDER):
            assert got.corpus[metric] == pytest.approx(corpus[metric], abs=1e-9), metric
            for image_id, expected in per[metric].items():
                assert values[(metric, image_id)] == pytest.approx(expected, abs=1e-9), (metric, image_id)
        assert len(values) == IMAGES * 7  # BLEU-1..4, METEOR, ROUGE-L, CIDEr-D, and nothing else per item
    finally:
        store.dispose()


def test_a_subset_is_one_query_with_its_own_or_the_runs_document_frequencies(
        sqlite_url: str, tmp_path: Path, karpathy_refs: dict[int, list[str]], fake_meteor: None) -> None:  # noqa: F811
    held, captions = results_kinds(karpathy_refs)["first_reference"]
    store = make_store(sqlite_url, held)
    results = tmp_path / "results.json"
    results.write_text(json.dumps([{"image_id": i, "caption": c} for i, c in captions.items()]))
    run_id, _ = import_results(store, results, "karpathy", "r")
    evaluate_run(store, run_id, clip_scorer=None, progress=False)  # tokenizes every text once
    subset = list(captions)[:40]
    sql = load_query("caption_metrics").text
    cols, rows = run_query(store, sql, {"run": run_id, "items": [str(i) for i in subset], "df": "subset"})
    got = {r[cols.index("item")]: dict(zip(cols, r)) for r in rows}
    corpus, per = pycoco({i: held[i] for i in subset}, {i: captions[i] for i in subset})
    assert got[None]["cider"] == pytest.approx(corpus[CIDER], abs=1e-9)
    assert got[None]["bleu_4"] == pytest.approx(corpus["Bleu_4"], abs=1e-9)
    for i in subset:
        assert got[str(i)]["cider"] == pytest.approx(per[CIDER][i], abs=1e-9)
    # The run's own frequencies: a subset's values are those of the whole run's evaluation.
    cols, rows = run_query(store, sql, {"run": run_id, "items": [str(i) for i in subset], "df": "run"})
    whole = stored_values(store, run_id, "item")
    for row in rows:
        if row[cols.index("item")] is not None:
            item = int(row[cols.index("item")])
            assert row[cols.index("cider")] == pytest.approx(whole[("CIDEr", item)], abs=1e-12)
    # The split here is the run's items: the same as the run's frequencies.
    cols, split_rows = run_query(store, sql, {"run": run_id, "items": [str(i) for i in subset], "df": "split"})
    assert [r[cols.index("cider")] for r in split_rows] == pytest.approx([r[cols.index("cider")] for r in rows],
                                                                          abs=1e-12)
    with pytest.raises(Exception, match="df must be subset, run or split"):
        run_query(store, sql, {"run": run_id, "df": "everything"})
    store.dispose()


def pycoco_candidates(pairs: list[tuple[int, str]], refs: dict[int, list[str]]) -> tuple[list[float], list[float]]:
    """Per-pair BLEU-4 and CIDEr-D with pycocoevalcap's scorers, the evaluated set's document frequencies
    (``refs``: tokenized), each pair scored as its item's caption would be."""
    from pycocoevalcap.bleu.bleu_scorer import BleuScorer
    from pycocoevalcap.cider.cider_scorer import CiderScorer, cook_test

    bleu = BleuScorer(n=4)
    for item, text in pairs:
        bleu += (text, refs[item])
    _, per = bleu.compute_score(option="closest", verbose=0)
    scorer = CiderScorer(n=4, sigma=6.0)
    for rs in refs.values():
        scorer.cook_append(None, rs)
    scorer.compute_doc_freq()
    cooked = dict(zip(refs, scorer.crefs))
    padding = scorer.crefs[:1] * len(cooked)
    cider: list[float] = []
    for start in range(0, len(pairs), len(cooked)):  # compute_cider takes log(len(crefs)): pad to the set's size
        part = pairs[start:start + len(cooked)]
        scorer.ctest = [cook_test(t) for _, t in part]
        scorer.crefs = [cooked[i] for i, _ in part] + padding[len(part):]
        cider.extend(float(v) for v in scorer.compute_cider()[: len(part)])
    return [float(v) for v in per[3]], cider


def test_candidate_metrics_equal_pycocoevalcap(db: str, karpathy_refs: dict[int, list[str]],
                                               fake_meteor: None) -> None:  # noqa: F811
    from tests.test_analysis_mirror import add_run, finish_run

    refs = {i: rs for i, rs in list(karpathy_refs.items())[:60]}
    store = make_store(db, refs)
    try:
        with store.read() as s:
            items = list(s.scalars(select(Item.id).order_by(Item.id)))
        run_id = add_run(store, items, iterations=3, per=4, tag="A dog near")
        with store.write() as s:  # candidates that are references too: their pairs score high
            from capstore.runs.steps import CANDIDATE_COLUMNS
            from capstore.store.bulk import insert_rows
            from capstore.store.content import put_texts

            rows = []
            for item, (ext, rs) in zip(items, refs.items()):
                rows.append((run_id, item, 3, put_texts(s, [rs[0]])[0], "generated", 0.9, 1))
            insert_rows(s, Candidate.__table__, CANDIDATE_COLUMNS, rows)
        finish_run(store, run_id)
        got = evaluate_run(store, run_id, candidates=True, clip_scorer=None, progress=False)
        values = stored_values(store, run_id, "candidate")
        with store.read() as s:
            cands = s.execute(select(Candidate.id, Candidate.item_id, Candidate.text_sha)
                              .where(Candidate.run_id == run_id)).all()
        assert got.candidates == len(cands) and len(values) == 2 * len(cands)
        con_rows = run_query(store, "SELECT text_sha, ptb FROM text_tokens")[1]
        ptb = dict(con_rows)
        ext = {i: int(e) for i, e in zip(items, refs)}
        tok_refs = {i: [ptb[sha] for sha in _ref_shas(store, i)] for i in items}
        pairs = sorted({(item, sha) for _, item, sha in cands})
        bleu, cider = pycoco_candidates([(i, ptb[sha]) for i, sha in pairs], tok_refs)
        expected = {pair: (b, c) for pair, b, c in zip(pairs, bleu, cider)}
        for cid, item, sha in cands:
            assert values[("Bleu_4", cid)] == pytest.approx(expected[(item, sha)][0], abs=1e-9), (cid, ext[item])
            assert values[("CIDEr", cid)] == pytest.approx(expected[(item, sha)][1], abs=1e-9), (cid, ext[item])
        assert max(cider) > 1  # the candidates that are references
    finally:
        store.dispose()


def _ref_shas(store: Store, item_id: int) -> list[str]:
    from capstore.store.schema import Reference

    with store.read() as s:
        return list(s.scalars(select(Reference.text_sha).where(Reference.item_id == item_id).order_by(Reference.ordinal)))


def test_without_the_mirror_eval_gives_the_same_values(sqlite_url: str, tmp_path: Path, karpathy_refs: dict[int, list[str]],
                                                       fake_meteor: None, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    """``--analysis off`` (or a mirror another process holds open): tokens in memory, the same values."""
    from tests.test_analysis_mirror import add_run, finish_run

    refs = {i: rs for i, rs in list(karpathy_refs.items())[:30]}
    store = make_store(sqlite_url, refs)
    with store.read() as s:
        items = list(s.scalars(select(Item.id).order_by(Item.id)))
    run_id = add_run(store, items, iterations=2, per=3, tag="A man")
    finish_run(store, run_id)
    off = evaluate_run(store, run_id, candidates=True, clip_scorer=None, progress=False, analysis="off")
    rows_off = len(stored_values(store, run_id, "item")) + len(stored_values(store, run_id, "candidate"))
    assert not (tmp_path / "store.db.analysis.duckdb").exists()  # nothing was cached
    from capstore.metrics import names

    first = names.EVAL_VERSION
    monkeypatch.setattr(names, "EVAL_VERSION", first + 1)  # a new implementation: computed again, beside
    on = evaluate_run(store, run_id, candidates=True, clip_scorer=None, progress=False)
    assert on.corpus == pytest.approx(off.corpus, abs=1e-12) and on.candidates == off.candidates
    with store.read() as s:
        rows = s.execute(select(MetricValue.metric, MetricValue.subject, MetricValue.implementation, MetricValue.value)
                         .where(MetricValue.run_id == run_id, MetricValue.scope != "corpus")).all()
        for metric, column in CANDIDATE_METRIC_COLUMNS.items():  # each evaluation's values, by implementation
            rows += s.execute(select(literal(metric), literal("candidate:") + cast(CandidateEvalValue.candidate_id, String),
                                     getattr(CandidateEval, f"{column}_implementation"),
                                     getattr(CandidateEvalValue, column))
                              .join(CandidateEval, CandidateEval.id == CandidateEvalValue.eval_id)
                              .where(CandidateEval.run_id == run_id)).all()
    newer = {(m, subj): v for m, subj, impl, v in rows if impl.endswith(f"eval-{first + 1}")}
    older = {(m, subj): v for m, subj, impl, v in rows if impl.endswith(f"eval-{first}")}
    assert newer.keys() == older.keys() and len(newer) == rows_off
    assert all(newer[k] == pytest.approx(older[k], abs=1e-12) for k in newer)
    store.dispose()
