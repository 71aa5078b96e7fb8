"""MILS runs: the algorithm's bookkeeping, reruns from the caches, extension, early stop, hybrid init."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from capstore.cli.main import cli
from capstore.methods.mils import format_prompt, keep_top, parse_candidates, should_stop
from capstore.store.schema import Candidate, Caption, ErrorEvent, IterationState, Run, UsageEvent, WorkItem
from tests.run_helpers import mils_args, snapshot


def _run(args: list[str], db: str, exit_code: int = 0) -> str:
    result = CliRunner().invoke(cli, [*args, "--db", db])
    assert result.exit_code == exit_code, result.output
    return result.output


def test_prompt_and_parse_follow_mils() -> None:
    prompt = format_prompt("Top:\n{descriptions}\nGive {requested_number}.", [("a cat", 0.2), ("a dog", 0.31234)], 50)
    assert prompt == "Top:\n0.312: a dog\n0.200: a cat\n\nGive 50."
    out = "Sure!\n1. A red ball (on grass)!\n2. a blue kite!\n3. A red ball\n- not numbered\n10.  a cat  "
    assert parse_candidates(out) == ["A red ball", "a blue kite", "a cat"]
    assert parse_candidates("no lines here") == []
    assert keep_top({"b": 0.5, "a": 0.5, "c": 0.9}, 2) == [("c", 0.9), ("a", 0.5)]
    assert should_stop([0.1, 0.2, 0.2, 0.2], patience=2, eps=0.0) and not should_stop([0.1, 0.2, 0.3], 2, 0.0)


def test_mils_run_writes_every_step_and_rerun_makes_zero_model_calls(demo_store, tiny_models, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    db = str(demo_store.url).replace("sqlite:///", "")
    args = mils_args(tmp_path, tiny_models.specs["scorer"], extra=("--limit", "6"))
    first = _run(args, db)
    assert first.startswith("run 1\n") and "6/6 items done" in first
    with demo_store.read() as s:
        per_iteration = dict(s.execute(select(IterationState.iteration, func.count()).where(IterationState.run_id == 1)
                                       .group_by(IterationState.iteration)).all())
        assert per_iteration == {0: 6, 1: 6, 2: 6, 3: 6}
        assert s.scalar(select(func.count()).select_from(Candidate).where(Candidate.iteration == 0)) == 6 * 5
        origins = set(s.scalars(select(Candidate.origin).where(Candidate.run_id == 1)))
        assert origins == {"pool", "generated"}
        best = s.execute(select(Caption.item_id, Caption.score, Caption.text_sha, Caption.iteration)).all()
        assert len(best) == 6
        for item_id, score, sha, iteration in best:  # the caption is the best candidate over all iterations
            top = s.scalar(select(func.max(Candidate.score)).where(Candidate.run_id == 1, Candidate.item_id == item_id))
            assert score == pytest.approx(top)
            first = s.scalar(select(func.min(Candidate.iteration)).where(  # found when its text first came up
                Candidate.run_id == 1, Candidate.item_id == item_id, Candidate.text_sha == sha))
            assert iteration == first
    second = _run(args, db)
    assert "run 2" in second and "made 0 model calls: everything came from the caches" in second
    assert snapshot(demo_store, 1) == snapshot(demo_store, 2)


def test_extend_iterations_reuses_the_first_ones(demo_store, tiny_models, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    db = str(demo_store.url).replace("sqlite:///", "")
    _run(mils_args(tmp_path, tiny_models.specs["scorer"], iterations=2, extra=("--limit", "4")), db)
    with demo_store.read() as s:
        before = s.scalar(select(func.max(Candidate.id)))
        first_finish = s.get(Run, 1).finished_at
    out = _run(["resume", "1", "--iterations", "4", "--quiet"], db)
    assert "4/4 items done" in out
    with demo_store.read() as s:
        assert s.get(Run, 1).finished_at > first_finish  # the extended run finished again, later
    _run(mils_args(tmp_path, tiny_models.specs["scorer"], iterations=4, extra=("--limit", "4")), db)  # run 2, fresh
    assert snapshot(demo_store, 1) == snapshot(demo_store, 2)
    with demo_store.read() as s:
        assert s.scalar(select(func.min(Candidate.iteration)).where(Candidate.run_id == 1, Candidate.id > before)) == 3
        assert s.get(Run, 1).config["iterations"] == 4


def test_early_stop_records_where_it_stopped(demo_store, tiny_models, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    db = str(demo_store.url).replace("sqlite:///", "")
    _run(mils_args(tmp_path, tiny_models.specs["scorer"], iterations=6, extra=("--limit", "4", "--early-stop", "1:1.0")), db)
    with demo_store.read() as s:
        stops = s.scalars(select(WorkItem.stopped_early_at).where(WorkItem.run_id == 1)).all()
        assert stops == [1, 1, 1, 1]  # no iteration can gain 1.0 of cosine: every image stops at once
        assert s.scalar(select(func.max(IterationState.iteration))) == 1
        assert s.scalar(select(func.count()).select_from(Caption)) == 4


def test_hybrid_init_from_a_baseline_run(demo_store, tiny_models, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    db = str(demo_store.url).replace("sqlite:///", "")
    _run(["run", "--method", "fake", "--captioner", "fake:echo", "--limit", "3", "--quiet"], db)
    _run(mils_args(tmp_path, tiny_models.specs["scorer"], iterations=1, extra=("--limit", "3", "--init-from", "1")), db)
    with demo_store.read() as s:
        seeds = s.scalars(select(Candidate.text_sha).where(Candidate.run_id == 2, Candidate.origin == "seed")).all()
        baseline = s.scalars(select(Caption.text_sha).where(Caption.run_id == 1)).all()
        assert sorted(seeds) == sorted(baseline)
        assert s.get(Run, 2).parent_run_id == 1


def test_garbage_generator_output_is_recorded_and_the_run_goes_on(demo_store, tiny_models, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    db = str(demo_store.url).replace("sqlite:///", "")
    out = _run(mils_args(tmp_path, tiny_models.specs["scorer"], generator="fake:garbage", iterations=2,
                         extra=("--limit", "3")), db)
    assert "3/3 items done" in out
    with demo_store.read() as s:
        kinds = s.scalars(select(ErrorEvent.kind)).all()
        assert kinds == ["unparsable_output"] * 6
        assert s.scalar(select(func.count()).select_from(Caption)) == 3


def test_failing_generator_fails_items_after_three_attempts(demo_store, tiny_models, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    db = str(demo_store.url).replace("sqlite:///", "")
    out = _run(mils_args(tmp_path, tiny_models.specs["scorer"], generator="fake:fail", iterations=2,
                         extra=("--limit", "2")), db, exit_code=1)  # a run with failed items exits 1
    assert "run 1: failed" in out
    assert "2 of 2 items failed; first error: item demo-00, generate: http_500: http_500 after 5 attempt(s)" in out
    with demo_store.read() as s:
        assert s.scalars(select(WorkItem.status)).all() == ["failed", "failed"]
        assert s.scalar(select(func.count()).select_from(ErrorEvent).where(ErrorEvent.kind == "http_500")) == 6
        assert s.scalar(select(func.count()).select_from(Caption)) == 0  # a failure is never a caption
        assert s.scalar(select(func.max(IterationState.iteration))) == 0  # iteration 0 stays committed


def test_real_tiny_models_end_to_end(demo_store, tiny_models, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    db = str(demo_store.url).replace("sqlite:///", "")
    out = _run(mils_args(tmp_path, tiny_models.specs["scorer"], generator=tiny_models.specs["generator"], iterations=1,
                         extra=("--limit", "2", "--max-new-tokens", "24", "--device", "cpu")), db)
    assert "2/2 items done" in out
    with demo_store.read() as s:
        stages = set(s.scalars(select(UsageEvent.stage).where(UsageEvent.run_id == 1)))
        assert {"encode_image", "encode_pool", "generate"} <= stages
        gen = s.scalars(select(UsageEvent).where(UsageEvent.stage == "generate")).first()
        assert gen.tokens_in > 0 and gen.tokens_out > 0 and gen.device_type == "cpu"


def test_bad_run_input_is_one_line_before_any_work(demo_store, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    db = str(demo_store.url).replace("sqlite:///", "")
    bad_prompt, good_prompt = tmp_path / "p.txt", tmp_path / "good.txt"
    bad_prompt.write_text("no placeholder")
    good_prompt.write_text("{descriptions}")
    cases = [
        (["run", "--method", "nope"], "unknown method 'nope'"),
        (["run", "--method", "mils", "--scorer", "open_clip:x", "--generator", "zz:y"], "unknown backend 'zz'"),
        (["run", "--method", "mils", "--scorer", "open_clip:x", "--generator", "hf:y", "--pool", "missing.txt",
          "--prompt", str(good_prompt)], "cannot read pool file missing.txt"),
        (["run", "--method", "mils", "--scorer", "open_clip:x", "--generator", "hf:y", "--pool", str(bad_prompt),
          "--prompt", str(bad_prompt)], "has no {descriptions} placeholder"),
        (["run", "--method", "blip2", "--captioner", "blip2:x", "--dataset", "nope"], "unknown dataset 'nope'"),
        (["resume", "99"], "no run 99"),
    ]
    for args, message in cases:
        result = CliRunner().invoke(cli, [*args, "--db", db])
        assert result.exit_code == 2 and message in result.output, (args, result.output)
    with demo_store.read() as s:
        assert s.scalar(select(func.count()).select_from(Run)) == 0


def test_resuming_a_finished_run_loads_no_model(demo_store, tiny_models, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from capstore.runs.engine import work

    class NoModels:  # a run with nothing left to claim must not load (for real models: gigabytes) any backend
        def scorer(self):  # type: ignore[no-untyped-def]
            raise AssertionError("scorer loaded")

        generator = captioner = scorer

    db = str(demo_store.url).replace("sqlite:///", "")
    _run(mils_args(tmp_path, tiny_models.specs["scorer"], iterations=1, extra=("--limit", "2")), db)
    _run(["run", "--method", "fake", "--captioner", "fake:echo", "--limit", "2", "--quiet"], db)
    for run_id in (1, 2):
        summary = work(demo_store, run_id, progress=False, backends=NoModels(), resume=True)  # type: ignore[arg-type]
        assert (summary.status, summary.steps, summary.items_done) == ("done", 0, 2)


def test_an_iteration_that_fails_after_its_generation_still_caches_it(demo_store, tiny_models, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The backends' writes of an iteration are committed beside its steps; an iteration that fails
    before that (here its scoring) still writes what its generator made, so a resume does not pay again."""
    from capstore.runs import mils_worker
    from capstore.store.schema import GenerationCache

    def scorer_dies(*_a, **_k):  # type: ignore[no-untyped-def]
        raise RuntimeError("the scorer died")

    db = str(demo_store.url).replace("sqlite:///", "")
    monkeypatch.setattr(mils_worker, "score_texts", scorer_dies)
    result = CliRunner().invoke(cli, [*mils_args(tmp_path, tiny_models.specs["scorer"], extra=("--limit", "4")),
                                      "--db", db])
    assert result.exit_code != 0
    with demo_store.read() as s:
        assert s.scalar(select(func.count()).select_from(IterationState).where(IterationState.iteration == 1)) == 0
        assert s.scalar(select(func.count()).select_from(GenerationCache)) == 4  # iteration 1's, one an item
        assert s.scalar(select(func.sum(UsageEvent.calls)).where(UsageEvent.stage == "generate")) == 4
    monkeypatch.undo()
    out = _run(["resume", "1", "--quiet"], db)
    assert "4/4 items done" in out
    with demo_store.read() as s:  # iteration 1's generations came from the cache on resume
        assert s.scalar(select(func.sum(UsageEvent.cached)).where(UsageEvent.stage == "generate")) >= 4
