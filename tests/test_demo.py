"""`capstore demo`: the README's main job, end to end on the tiny models, and idempotent."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner
from sqlalchemy import func, select

from capstore.cli.main import cli
from capstore.store import open_store
from capstore.store.schema import Candidate, Caption, MetricValue, Run, UsageEvent


def _demo(workdir: Path, db: Path, *extra: str) -> str:
    result = CliRunner().invoke(cli, ["--db", str(db), "demo", "--workdir", str(workdir), "--quiet", *extra])
    assert result.exit_code == 0, result.output
    return result.output


def _calls(db: Path) -> int:
    store = open_store(str(db))
    with store.read() as s:
        return int(s.scalar(select(func.coalesce(func.sum(UsageEvent.calls), 0))))


def test_demo_runs_everything_then_reuses_it(tmp_path: Path) -> None:
    db, workdir = tmp_path / "demo.db", tmp_path / "work"
    out = _demo(workdir, db)
    for label in ("demo-mils", "demo-blip2", "demo-llava"):
        assert label in out
    assert out.count("24/24 items done") == 3
    store = open_store(str(db))
    with store.read() as s:
        runs = s.scalars(select(Run).order_by(Run.id)).all()
        assert [(r.method, r.status) for r in runs] == [("mils", "done"), ("blip2", "done"), ("llava", "done")]
        assert s.scalar(select(func.count()).select_from(Caption)) == 72
        # The taught tiny Llama answers in numbered lines: MILS really generates and scores candidates.
        generated = s.scalar(select(func.count()).select_from(Candidate).where(
            Candidate.run_id == runs[0].id, Candidate.origin == "generated", Candidate.iteration > 0))
        assert generated > 0
        metrics = set(s.scalars(select(MetricValue.metric).where(MetricValue.scope == "corpus")))
    assert {"Bleu_4", "ROUGE_L", "CIDEr", "CLIPScore"} <= metrics
    report = workdir / "report" / "report.md"
    assert report.is_file() and "demo-mils" in report.read_text()
    calls = _calls(db)
    assert calls > 0

    again = _demo(workdir, db)
    assert again.count("0 steps committed now") == 3
    with store.read() as s:
        assert s.scalar(select(func.count()).select_from(Run)) == 3  # found again, not created anew
    assert _calls(db) == calls  # no model was called the second time


def test_demo_without_eval_resumes_an_interrupted_run(tmp_path: Path) -> None:
    """A run left half-done (as a killed demo leaves it) is continued, not started again."""
    from capstore.store.schema import IterationState, WorkItem

    db, workdir = tmp_path / "demo.db", tmp_path / "work"
    _demo(workdir, db, "--no-eval")
    store = open_store(str(db))
    with store.write() as s:  # the state a kill after iteration 2 of 4 items leaves behind
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
    out = _demo(workdir, db, "--no-eval")
    assert f"run {mils.id}: done; 24/24 items done; 4 steps committed now" in out
    with store.read() as s:
        assert s.scalar(select(func.count()).select_from(Run)) == 3
        assert s.scalar(select(func.count()).select_from(Caption).where(Caption.run_id == mils.id)) == 24


def test_taught_llm_answers_in_parsable_lines(tiny_models, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The demo's teaching step turns gibberish into `N. text` lines the MILS parser takes."""
    from capstore.backends.registry import load_backend
    from capstore.backends.tiny_teach import teach_llm
    from capstore.datasets import make_demo
    from capstore.methods.demo_assets import DEMO_PROMPT, demo_pool_lines
    from capstore.methods.mils import format_prompt, parse_candidates

    lines = demo_pool_lines()
    store = open_store(str(tmp_path / "t.db"))
    make_demo(store)
    prompts = [format_prompt(DEMO_PROMPT, [(t, 0.2) for t in lines[k:k + 10]], 6) for k in (0, 50, 100, 200)]
    parsed = {}
    for name, folder in (("random", tiny_models.llm),
                         ("taught", teach_llm(tiny_models.llm, tmp_path / "taught", lines, DEMO_PROMPT, steps=150))):
        gen = load_backend("generator", f"hf:{folder}", store, device="cpu", max_new_tokens=128)
        parsed[name] = [parse_candidates(g.text) for g in gen.generate(prompts, [1, 2, 3, 4])]
    assert sum(map(len, parsed["random"])) == 0
    assert all(len(p) >= 2 for p in parsed["taught"])
    # A second call reuses the taught folder instead of training again.
    before = (tmp_path / "taught" / "model.safetensors").stat().st_mtime_ns
    teach_llm(tiny_models.llm, tmp_path / "taught", lines, DEMO_PROMPT, steps=150)
    assert (tmp_path / "taught" / "model.safetensors").stat().st_mtime_ns == before
