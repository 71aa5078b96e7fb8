"""`capstore demo`: the cost study in miniature on models trained on the drawn world, and idempotent."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

from sqlalchemy import func, select

from capstore.analysis.queries import load_query, run_query
from capstore.datasets.demo import demo_vocabulary, words_of
from capstore.store import open_store
from capstore.store.content import get_texts
from capstore.store.schema import (Candidate, Caption, IterationState, MetricValue, Run, UsageEvent, WorkItem)
from tests.demo_run import first_demo, run_demo_cli

LABELS = ("demo-mils", "demo-blip2", "demo-llava", "demo-hybrid")


def _runs(store) -> dict[str, Run]:  # type: ignore[no-untyped-def]
    with store.read() as s:
        return {r.label: r for r in s.scalars(select(Run).order_by(Run.id))}


def _usage(store) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    """(usage events, model calls) in the whole store."""
    with store.read() as s:
        return s.execute(select(func.count(), func.coalesce(func.sum(UsageEvent.calls), 0))).one()


def _invocation(output: str) -> tuple[int, int]:
    """(model calls, training steps) the demo says this invocation made."""
    m = re.search(r"this invocation: (\d+) model calls, (\d+) training steps", output)
    assert m, output
    return int(m.group(1)), int(m.group(2))


def test_first_demo_trains_runs_evaluates_and_reports() -> None:
    demo = first_demo()
    assert "training the demo models (clip, llm, blip2, llava)" in demo.output
    calls, steps = _invocation(demo.output)
    assert calls > 0 and steps > 0
    assert demo.output.count("24/24 items done") == 4
    runs = _runs(demo.store)
    assert [(label, r.method, r.status) for label, r in runs.items()] == [
        ("demo-mils", "mils", "done"), ("demo-blip2", "blip2", "done"), ("demo-llava", "llava", "done"),
        ("demo-hybrid", "mils", "done")]
    with demo.store.read() as s:
        assert s.scalar(select(func.count()).select_from(Caption)) == 96
    report = (demo.workdir / "report" / "report.md").read_text()
    fingerprint = re.search(r"demo models: .* \(recipe ([0-9a-f]{12})\)", demo.output).group(1)  # type: ignore[union-attr]
    assert f"recipe fingerprint `{fingerprint}`" in report and "not COCO" in report
    for label in LABELS:
        assert f"| {label} |" in report
    assert not re.search(r"\d[eE][-+]\d", report)  # no scientific notation anywhere


def test_rerun_trains_nothing_and_makes_no_model_call() -> None:
    demo = first_demo()
    before = _usage(demo.store)
    again = run_demo_cli(demo.workdir, demo.db)  # not --quiet: nothing to show, so no bar and no teaching line
    assert _invocation(again) == (0, 0)
    assert "training the demo models" not in again and "%|" not in again
    assert again.count("0 steps committed now") == 4
    assert _usage(demo.store) == before  # not one usage event: nothing was computed
    assert len(_runs(demo.store)) == 4  # found again, not created anew


def test_mils_climbs_over_iterations_with_generated_captions() -> None:
    """The loop's behaviour, which random models cannot show: generating and keeping the best raises the
    mean best score after iteration 0, the final captions include generated ones, and the reference
    metric of the best-so-far caption ends higher than the pool's (iteration 0)."""
    demo = first_demo()
    store = demo.store
    mils = _runs(store)["demo-mils"]
    with store.read() as s:
        best = dict(s.execute(select(IterationState.iteration, func.avg(IterationState.best_score))
                              .where(IterationState.run_id == mils.id).group_by(IterationState.iteration)).all())
        origins = s.scalars(select(Candidate.origin).join(Caption, (Caption.run_id == Candidate.run_id)
                                                          & (Caption.item_id == Candidate.item_id)
                                                          & (Caption.text_sha == Candidate.text_sha))
                            .where(Caption.run_id == mils.id)).all()
    assert best[max(best)] > best[0]
    assert "generated" in origins
    cols, rows = run_query(store, load_query("iteration_curve").text, {"runs": [mils.id], "metric": "CIDEr"})
    curve = [dict(zip(cols, r)) for r in rows]
    assert curve[-1]["mean_metric"] > curve[0]["mean_metric"]


def test_baselines_write_sentences_of_the_drawn_world() -> None:
    demo = first_demo()
    store, vocabulary = demo.store, demo_vocabulary()
    runs = _runs(store)
    for label in ("demo-blip2", "demo-llava"):
        with store.read() as s:
            shas = s.scalars(select(Caption.text_sha).where(Caption.run_id == runs[label].id)).all()
            texts = get_texts(s, shas)
            cider = s.scalar(select(MetricValue.value).where(MetricValue.run_id == runs[label].id,
                                                             MetricValue.metric == "CIDEr",
                                                             MetricValue.scope == "corpus"))
        sentences = [words_of(texts[sha]) for sha in shas]
        good = [w for w in sentences if w and set(w) <= vocabulary]
        assert len(good) >= 0.9 * len(sentences), (label, [texts[sha] for sha in shas])
        assert cider is not None and cider > 0


def test_hybrid_starts_from_blip2_and_stops_early() -> None:
    demo = first_demo()
    runs = _runs(demo.store)
    hybrid = runs["demo-hybrid"]
    assert hybrid.parent_run_id == runs["demo-blip2"].id
    with demo.store.read() as s:
        seeds = s.scalar(select(func.count()).select_from(Candidate).where(Candidate.run_id == hybrid.id,
                                                                           Candidate.origin == "seed"))
        stopped = s.scalar(select(func.count()).select_from(WorkItem).where(WorkItem.run_id == hybrid.id,
                                                                            WorkItem.stopped_early_at.is_not(None)))
    assert seeds >= 24 and stopped > 0


def test_demo_without_eval_resumes_an_interrupted_run(tmp_path: Path) -> None:
    """A run left half-done (as a killed demo leaves it) is continued, not started again."""
    demo, db = first_demo(), tmp_path / "demo.db"
    source, copy = sqlite3.connect(demo.db), sqlite3.connect(db)
    source.backup(copy)  # a copy of the first demo's store
    source.close(), copy.close()
    store = open_store(str(db))
    with store.write() as s:  # the state a kill after the last iteration's start leaves for 4 items
        mils = s.scalar(select(Run).where(Run.label == "demo-mils"))
        last = s.scalar(select(func.max(IterationState.iteration)).where(IterationState.run_id == mils.id))
        undone = s.scalars(select(WorkItem).where(WorkItem.run_id == mils.id).order_by(WorkItem.id).limit(4)).all()
        ids = [w.item_id for w in undone]
        for w in undone:
            w.status, w.iterations_done = "pending", last - 1
        for table, col in ((Caption, None), (IterationState, IterationState.iteration), (Candidate, Candidate.iteration)):
            cond = [table.run_id == mils.id, table.item_id.in_(ids)] + ([col == last] if col is not None else [])
            s.execute(table.__table__.delete().where(*cond))
        mils.status = "interrupted"
    out = run_demo_cli(demo.workdir, db, "--no-eval", "--quiet")  # the trained models are reused
    assert f"run {mils.id}: done; 24/24 items done; 4 steps committed now" in out
    assert _invocation(out)[1] == 0
    with store.read() as s:
        assert s.scalar(select(func.count()).select_from(Run)) == 4
        assert s.scalar(select(func.count()).select_from(Caption).where(Caption.run_id == mils.id)) == 24
