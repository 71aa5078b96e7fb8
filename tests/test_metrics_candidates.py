"""Candidate-level BLEU-4 and CIDEr-D of a small MILS run (tiny CLIP, fake generator).

Checked against pycocoevalcap called directly: for one candidate per item, Bleu(4) and Cider over
the run's evaluated items (CIDEr-D's document frequencies come from their references) give the
values stored for those candidates; a candidate whose text is the caption has the caption's values.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from capstore.cli.main import cli
from capstore.metrics import evaluate_run
from capstore.metrics.names import reference_implementation
from capstore.metrics.store_values import stored_candidate_values
from capstore.store.engine import Store
from capstore.store.schema import Candidate, Caption, MetricValue, Reference, Text
from tests.run_helpers import mils_args
from tests.test_metrics_store import fake_meteor  # noqa: F401 - fixture

pytestmark = pytest.mark.skipif(shutil.which("java") is None, reason="Java not found on PATH: PTBTokenizer needs it")


@pytest.fixture
def mils_run(demo_store: Store, tiny_models, tmp_path: Path) -> int:  # type: ignore[no-untyped-def]
    db = demo_store.url.replace("sqlite:///", "")
    args = mils_args(tmp_path, tiny_models.specs["scorer"], iterations=2, extra=("--limit", "6"))
    out = CliRunner().invoke(cli, [*args, "--db", db])
    assert out.exit_code == 0, out.output
    return 1


def _values(store: Store, run_id: int, scope: str) -> dict[tuple[str, int], float]:
    if scope == "candidate":  # typed columns of candidate_eval_values (migration 0006)
        return {k: v for k, (v, _) in stored_candidate_values(store, run_id).items()}
    key = MetricValue.item_id
    with store.read() as s:
        return {(m, k): v for m, k, v in s.execute(select(MetricValue.metric, key, MetricValue.value)
                                                  .where(MetricValue.run_id == run_id, MetricValue.scope == scope))}


def test_candidate_metrics_equal_pycocoevalcap(demo_store: Store, mils_run: int, fake_meteor: None,  # noqa: F811
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    result = evaluate_run(demo_store, mils_run, candidates=True, clip_scorer=None, progress=False)
    with demo_store.read() as s:
        n_candidates = s.scalar(select(func.count()).select_from(Candidate).where(Candidate.run_id == mils_run))
        cands = s.execute(select(Candidate.id, Candidate.item_id, Text.text).join(Text, Text.sha256 == Candidate.text_sha)
                          .where(Candidate.run_id == mils_run).order_by(Candidate.id)).all()
        captions = dict(s.execute(select(Caption.item_id, Text.text).join(Text, Text.sha256 == Caption.text_sha)
                                  .where(Caption.run_id == mils_run)).all())
        refs: dict[int, list[str]] = {}
        for item, text in s.execute(select(Reference.item_id, Text.text).join(Text, Text.sha256 == Reference.text_sha)
                                    .where(Reference.item_id.in_(list(captions))).order_by(Reference.ordinal)):
            refs.setdefault(item, []).append(text)
    assert result.candidates == n_candidates and n_candidates > 6 * 5
    cand_values = _values(demo_store, mils_run, "candidate")
    assert len(cand_values) == 2 * n_candidates
    item_values = _values(demo_store, mils_run, "item")

    # A candidate whose text is the caption has the caption's per-item values.
    same = [(cid, item) for cid, item, text in cands if text == captions[item]]
    assert same
    for cid, item in same:
        for metric in ("Bleu_4", "CIDEr"):
            assert cand_values[(metric, cid)] == pytest.approx(item_values[(metric, item)], abs=1e-12)

    # One candidate per item (its last), scored directly as COCOEvalCap would score them as captions.
    chosen = {item: (cid, text) for cid, item, text in cands}
    tokenizer = PTBTokenizer()
    gts = tokenizer.tokenize({i: [{"caption": r} for r in refs[i]] for i in captions})
    res = tokenizer.tokenize({i: [{"caption": chosen[i][1]}] for i in captions})
    _, bleu = Bleu(4).compute_score(gts, res, verbose=0)
    _, cider = Cider().compute_score(gts, res)
    for k, item in enumerate(gts):
        assert cand_values[("Bleu_4", chosen[item][0])] == pytest.approx(bleu[3][k], abs=1e-12)
        assert cand_values[("CIDEr", chosen[item][0])] == pytest.approx(cider[k], abs=1e-12)
    assert max(cider) > 0

    impls = {impl for _, impl in stored_candidate_values(demo_store, mils_run).values()}
    assert impls == {reference_implementation("Bleu_4"), reference_implementation("CIDEr")}

    def no_tokenizer(*_a: object) -> list[str]:
        raise AssertionError("recomputed")

    monkeypatch.setattr("capstore.metrics.text_tokens.ptb_tokenize", no_tokenizer)
    again = evaluate_run(demo_store, mils_run, candidates=True, clip_scorer=None, progress=False)
    assert again.from_store and again.candidates == n_candidates


def test_new_candidates_are_scored_on_the_next_eval(demo_store: Store, mils_run: int, fake_meteor: None) -> None:  # noqa: F811
    evaluate_run(demo_store, mils_run, candidates=True, clip_scorer=None, progress=False)
    out = CliRunner().invoke(cli, ["resume", str(mils_run), "--iterations", "3", "--quiet",
                                   "--db", demo_store.url.replace("sqlite:///", "")])
    assert out.exit_code == 0, out.output
    result = evaluate_run(demo_store, mils_run, candidates=True, clip_scorer=None, progress=False)
    assert not result.from_store and "candidates" in result.computed
    with demo_store.read() as s:
        n = s.scalar(select(func.count()).select_from(Candidate).where(Candidate.run_id == mils_run))
        legacy = s.scalar(select(func.count()).select_from(MetricValue).where(MetricValue.scope == "candidate"))
    stored = stored_candidate_values(demo_store, mils_run)
    assert result.candidates == n and len(stored) == 2 * n and legacy == 0


def test_batches_of_items_give_the_values_of_one_query(demo_store: Store, mils_run: int) -> None:
    """eval scores candidates a few hundred items at a time; document frequencies stay the run's."""
    from capstore.metrics.duckdb_metrics import MetricSession
    from capstore.metrics.store_values import load_inputs

    inputs = load_inputs(demo_store, mils_run)
    items = [inputs.external[i] for i in inputs.with_refs]
    session = MetricSession.open(demo_store, inputs, inputs.with_refs, candidates=True)
    try:
        whole = {r["candidate_id"]: r for t in session.candidate_metrics(mils_run, items, batch=100) for r in t.to_pylist()}
        parts = {r["candidate_id"]: r for t in session.candidate_metrics(mils_run, items, batch=2) for r in t.to_pylist()}
        from capstore.analysis.queries import load_query

        alone = session.con.execute(load_query("candidate_metrics").text,  # one image, its own frequencies
                                    {"run": mils_run, "items": items[:1], "df": "subset"}).to_arrow_table()
        first = {r["candidate_id"]: r for r in alone.to_pylist()}
    finally:
        session.close()
    assert whole.keys() == parts.keys() and len(whole) > 6 * 5
    for cid, row in whole.items():
        for metric in ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "cider"):
            assert parts[cid][metric] == pytest.approx(row[metric], abs=1e-12), (cid, metric)
    assert set(first) < set(whole)
    assert all(first[c]["cider"] == 0 for c in first) and any(whole[c]["cider"] > 0 for c in first)  # log(1) = 0
    assert all(first[c]["bleu_4"] == pytest.approx(whole[c]["bleu_4"]) for c in first)  # BLEU has no corpus part
