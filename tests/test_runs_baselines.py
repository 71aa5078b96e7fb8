"""Baseline runs: one caption per image, candidates ranked by a scorer, failures as errors and retries."""

from __future__ import annotations

from click.testing import CliRunner
from sqlalchemy import func, select

from capstore.cli.main import cli
from capstore.store.schema import Candidate, Caption, ErrorEvent, ImageBlob, Item, UsageEvent, WorkItem


def _run(args: list[str], db: str, exit_code: int = 0) -> str:
    result = CliRunner().invoke(cli, [*args, "--db", db, "--quiet"])
    assert result.exit_code == exit_code, result.output
    return result.output


def test_blip2_baseline_on_the_tiny_model(demo_store, tiny_models) -> None:  # type: ignore[no-untyped-def]
    db = str(demo_store.url).replace("sqlite:///", "")
    out = _run(["run", "--method", "blip2", "--captioner", tiny_models.specs["blip2"], "--limit", "5",
                "--max-new-tokens", "6", "--device", "cpu"], db)
    assert "5/5 items done" in out
    with demo_store.read() as s:
        assert s.scalar(select(func.count()).select_from(Caption)) == 5
        event = s.scalars(select(UsageEvent).where(UsageEvent.stage == "caption")).first()
        assert event.images == 5 and event.tokens_out > 0 and event.device_seconds > 0
    again = _run(["run", "--method", "blip2", "--captioner", tiny_models.specs["blip2"], "--limit", "5",
                  "--max-new-tokens", "6", "--device", "cpu"], db)
    assert "made 0 model calls" in again


def test_llava_candidates_ranked_by_scorer(demo_store, tiny_models) -> None:  # type: ignore[no-untyped-def]
    db = str(demo_store.url).replace("sqlite:///", "")
    _run(["run", "--method", "llava", "--captioner", tiny_models.specs["llava"], "--scorer", tiny_models.specs["scorer"],
          "--num-candidates", "3", "--limit", "2", "--max-new-tokens", "6", "--device", "cpu"], db)
    with demo_store.read() as s:
        for item_id, text_sha, score in s.execute(select(Caption.item_id, Caption.text_sha, Caption.score)).all():
            cands = s.execute(select(Candidate.text_sha, Candidate.score, Candidate.rank).where(
                Candidate.item_id == item_id)).all()
            assert 1 <= len(cands) <= 3 and all(c.origin == "baseline" for c in s.scalars(select(Candidate)))
            best = max(cands, key=lambda c: c[1])
            assert (best[0], best[2]) == (text_sha, 1) and score == best[1]


def test_failed_call_is_an_error_and_a_retry_never_a_caption(demo_store) -> None:  # type: ignore[no-untyped-def]
    db = str(demo_store.url).replace("sqlite:///", "")
    out = _run(["run", "--method", "fake", "--captioner", "fake:flaky", "--limit", "3"], db)
    assert "3/3 items done" in out
    with demo_store.read() as s:
        errors = s.scalars(select(ErrorEvent.kind)).all()
        assert errors == ["http_429"] * 3
        assert s.scalars(select(WorkItem.attempts)).all() == [2, 2, 2]
        assert s.scalar(select(func.count()).select_from(Caption)) == 3


def test_corrupt_image_fails_its_item_only(demo_store) -> None:  # type: ignore[no-untyped-def]
    db = str(demo_store.url).replace("sqlite:///", "")
    with demo_store.write() as s:
        sha = s.scalar(select(Item.image_sha).where(Item.external_id == "demo-01"))
        s.get(ImageBlob, sha).data = b"garbage bytes"
    out = _run(["run", "--method", "fake", "--captioner", "fake:echo", "--limit", "3"], db, exit_code=1)
    assert "2/3 items done, 1 failed" in out
    assert "1 of 3 items failed; first error: item demo-01, load_image: corrupt_image: image" in out
    with demo_store.read() as s:
        (kind, message) = s.execute(select(ErrorEvent.kind, ErrorEvent.message)).one()
        assert kind == "corrupt_image" and sha[:12] in message
