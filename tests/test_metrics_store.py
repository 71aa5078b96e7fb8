"""How evaluations live in the store: served when unchanged, replaced when captions change, kept
beside a new implementation; unavailable metrics are said, never stored; Java problems are one line.

METEOR's JVM takes seconds to start, so these tests replace it with a stand-in (``fake_meteor``)
unless they are about METEOR itself; its real values are checked in ``test_metrics_coco``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select, update

from capstore.cli.main import cli
from capstore.datasets import make_demo
from capstore.store import open_store
from capstore.errors import CapstoreError, InputError
from capstore.metrics import COCO_METRICS, evaluate_run
from capstore.metrics import coco_caption, java, names, spice
from capstore.results_io import import_results
from capstore.store.content import put_texts
from capstore.store.engine import Store
from capstore.store.schema import Caption, Item, MetricValue, Reference, Text

pytestmark = pytest.mark.skipif(shutil.which("java") is None, reason="Java not found on PATH: PTBTokenizer needs it")


class FakeMeteor:
    """METEOR's stand-in: a value per image from the caption's length, no JVM."""

    def start(self, gts: dict[Any, list[str]], res: dict[Any, list[str]]) -> None:
        self.gts, self.res = gts, res

    def result(self) -> tuple[float, list[float]]:
        per = [len(self.res[k][0].split()) / 10 for k in self.gts]
        return sum(per) / len(per), per

    def close(self) -> None:
        pass


@pytest.fixture
def fake_meteor(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(coco_caption, "MeteorJob", FakeMeteor)


@pytest.fixture
def demo_run(store: Store, tmp_path: Path) -> int:
    """An imported run over the demo dataset whose captions are each image's second reference."""
    make_demo(store)
    with store.read() as s:
        rows = s.execute(select(Item.external_id, Text.text).join(Reference, Reference.item_id == Item.id)
                         .join(Text, Text.sha256 == Reference.text_sha).where(Reference.ordinal == 1)).all()
    path = tmp_path / "results.json"
    path.write_text(json.dumps([{"image_id": e, "caption": t} for e, t in rows]))
    return import_results(store, path, "demo", "second-reference")[0]


def _rows(store: Store, run_id: int) -> dict[tuple[str, str, str], float]:
    with store.read() as s:
        return {(m, subj, impl): v for m, subj, impl, v in s.execute(
            select(MetricValue.metric, MetricValue.subject, MetricValue.implementation, MetricValue.value)
            .where(MetricValue.run_id == run_id))}


def test_unchanged_run_is_served_changed_captions_recompute(store: Store, demo_run: int, fake_meteor: None,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    first = evaluate_run(store, demo_run, clip_scorer=None, progress=False)
    assert not first.from_store and set(first.computed) == set(COCO_METRICS) and first.items == 24
    rows = _rows(store, demo_run)
    assert len(rows) == len(COCO_METRICS) * 25
    assert "SPICE" not in {m for m, _, _ in rows}

    def no_tokenizer(*_a: object) -> list[str]:
        raise AssertionError("recomputed")

    with monkeypatch.context() as m:
        m.setattr("capstore.metrics.text_tokens.ptb_tokenize", no_tokenizer)
        again = evaluate_run(store, demo_run, clip_scorer=None, progress=False)
    assert again.from_store and again.corpus == first.corpus and _rows(store, demo_run) == rows

    with store.write() as s:  # one caption changes
        item = s.scalar(select(Caption.item_id).where(Caption.run_id == demo_run).order_by(Caption.item_id).limit(1))
        sha = put_texts(s, ["Nothing at all like the picture."])[0]
        s.execute(update(Caption).where(Caption.run_id == demo_run, Caption.item_id == item).values(text_sha=sha))
    changed = evaluate_run(store, demo_run, clip_scorer=None, progress=False)
    assert not changed.from_store and set(changed.computed) == set(COCO_METRICS)
    assert changed.corpus["CIDEr"] < first.corpus["CIDEr"]
    new_rows = _rows(store, demo_run)
    assert set(new_rows) == set(rows)  # replaced, not added
    impl = names.reference_implementation("Bleu_4")
    assert new_rows[("Bleu_4", f"item:{item}", impl)] < rows[("Bleu_4", f"item:{item}", impl)]


def test_new_implementation_adds_values_beside_the_old(store: Store, demo_run: int, fake_meteor: None,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    evaluate_run(store, demo_run, clip_scorer=None, progress=False)
    old = _rows(store, demo_run)
    monkeypatch.setattr(names, "EVAL_VERSION", names.EVAL_VERSION + 1)
    newer = evaluate_run(store, demo_run, clip_scorer=None, progress=False)
    assert not newer.from_store
    rows = _rows(store, demo_run)
    assert len(rows) == 2 * len(old) and set(old) <= set(rows)


def test_spice_without_its_jars_is_reported_not_stored(store: Store, demo_run: int, fake_meteor: None,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spice, "CORENLP_JARS", ("absent-corenlp.jar",))
    result = evaluate_run(store, demo_run, clip_scorer=None, progress=False)
    assert "SPICE" not in result.corpus
    reason = result.unavailable["SPICE"]
    assert "Stanford CoreNLP" in reason and "absent-corenlp.jar" in reason and "\n" not in reason
    with store.read() as s:
        assert s.scalar(select(func.count()).select_from(MetricValue).where(MetricValue.metric == "SPICE")) == 0


def test_meteor_time_out_is_reported_then_computed_alone(store: Store, demo_run: int,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    if store.dialect != "sqlite":
        pytest.skip("METEOR's handling does not depend on the database and its JVM takes seconds: SQLite only")
    with monkeypatch.context() as m:
        m.setitem(java.TIMEOUTS, "meteor", 0.05)
        first = evaluate_run(store, demo_run, clip_scorer=None, progress=False)
    assert first.unavailable["METEOR"] == "METEOR timed out after 0.05 s (raise CAPSTORE_JAVA_TIMEOUT)"
    assert "METEOR" not in first.corpus and "CIDEr" in first.corpus
    assert "METEOR" not in {m for m, _, _ in _rows(store, demo_run)}
    second = evaluate_run(store, demo_run, clip_scorer=None, progress=False)
    assert second.computed == ["METEOR"] and 0 < second.corpus["METEOR"] <= 1
    assert len([k for k in _rows(store, demo_run) if k[0] == "METEOR"]) == 25


def test_java_missing_is_one_line_and_stores_nothing(store: Store, demo_run: int,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(java.shutil, "which", lambda _name: None)
    with pytest.raises(CapstoreError, match="^Java not found on PATH: .*install a Java runtime") as info:
        evaluate_run(store, demo_run, clip_scorer=None, progress=False)
    assert "\n" not in str(info.value)
    assert _rows(store, demo_run) == {}


def test_runs_without_captions_or_unknown(store: Store, tmp_path: Path) -> None:
    make_demo(store)
    with pytest.raises(InputError, match="no run 5 in this store"):
        evaluate_run(store, 5, clip_scorer=None, progress=False)
    from capstore.runs import RunConfig, create_run

    run_id = create_run(store, RunConfig(method="fake", dataset="demo", captioner="fake:echo", limit=2))
    with pytest.raises(InputError, match=f"run {run_id} has no captions yet"):
        evaluate_run(store, run_id, clip_scorer=None, progress=False)


def test_cli_eval_errors_are_one_line(db_url: str) -> None:
    open_store(db_url).dispose()  # an existing store without that run (a missing one is refused earlier)
    out = CliRunner().invoke(cli, ["eval", "3", "--no-clipscore", "--db", db_url])
    assert out.exit_code == 2 and out.output == "Error: no run 3 in this store (see `capstore runs list`)\n"
