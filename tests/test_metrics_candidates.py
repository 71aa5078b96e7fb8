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
    key = MetricValue.candidate_id if scope == "candidate" else MetricValue.item_id
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

    with demo_store.read() as s:
        impls = set(s.scalars(select(MetricValue.implementation).where(MetricValue.scope == "candidate")))
    assert impls == {reference_implementation("Bleu_4"), reference_implementation("CIDEr")}

    def no_tokenizer(*_a: object) -> list[str]:
        raise AssertionError("recomputed")

    monkeypatch.setattr("capstore.metrics.evaluate.ptb_tokenize", no_tokenizer)
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
        stored = s.scalar(select(func.count()).select_from(MetricValue).where(MetricValue.scope == "candidate"))
    assert result.candidates == n and stored == 2 * n


def test_parallel_scoring_equals_serial(monkeypatch: pytest.MonkeyPatch) -> None:
    from capstore.metrics import candidates

    refs = {1: ["a red circle on a blue sky", "one red circle"], 2: ["two green squares", "green squares at sea"],
            3: ["a white triangle at night"]}
    pairs = [(1, "a red circle"), (2, "two green squares at sea"), (3, "a triangle"), (1, "green squares"),
             (2, "two green squares"), (3, "a white triangle at night"), (1, "a red circle")]
    serial = candidates.score_pairs(pairs, refs, workers=1)
    monkeypatch.setattr(candidates, "PARALLEL_FROM", 1)
    assert candidates.score_pairs(pairs, refs, workers=4) == serial
    assert serial[1][5] > serial[1][2] and serial[0][5] == pytest.approx(1.0)
