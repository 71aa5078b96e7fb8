"""A store with real runs for the analysis tests (SQLite and PostgreSQL), and what the tests expect of it.

Runs are made by the run engine (tiny CLIP scorer, fake generator/captioner), so candidates,
iteration states, work items and usage events are real. Metric values (the eval command's job)
and priced usage (GPU, API) are written with the ORM, as ``capstore eval``/``import-results`` would.
Other analysis test modules import ``analysis_store`` from here; it is built once per database.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from capstore.analysis.duckdb_store import connect
from capstore.cli.main import cli
from capstore.datasets import make_demo
from capstore.prices import set_price
from capstore.store import Store, open_store
from capstore.store.schema import (Candidate, CandidateEval, CandidateEvalValue, Caption, MetricValue, Price, Run,
                                   UsageEvent)
from tests.conftest import make_pg_url
from tests.run_helpers import mils_args

CORPUS_METRICS = ("Bleu_4", "METEOR", "ROUGE_L", "CIDEr", "CLIPScore")


@dataclass
class AnalysisStore:
    store: Store
    db: str  # what --db takes
    mils: int  # MILS, 3 iterations, 4 items, candidate-scope CIDEr for every candidate
    small_pool: int  # MILS, --pool-size 50, early stop after 1 iteration
    baseline: int  # fake captioner, priced API usage


def text_metric(text_sha: str) -> float:
    """A candidate's fake CIDEr: a function of its text, as a real metric would be."""
    return int(text_sha[:8], 16) % 1000 / 1000


def _run(args: list[str], db: str) -> int:
    result = CliRunner().invoke(cli, [*args, "--db", db])
    assert result.exit_code == 0, result.output
    return int(result.output.split("\n", 1)[0].removeprefix("run "))


def build(db: str, tmp: Path, scorer: str) -> AnalysisStore:
    store = open_store(db)
    make_demo(store)
    mils = _run(mils_args(tmp, scorer, iterations=3, extra=("--limit", "4")), db)
    small = _run(mils_args(tmp, scorer, iterations=3, extra=("--limit", "4", "--pool-size", "50",
                                                              "--early-stop", "1:1.0")), db)
    baseline = _run(["run", "--method", "fake", "--captioner", "fake:echo", "--limit", "4", "--quiet",
                     "--label", "echo"], db)
    _add_metrics(store, mils, small, baseline)
    _add_priced_usage(store, mils, baseline)
    return AnalysisStore(store, db, mils, small, baseline)


def _add_metrics(store: Store, mils: int, small: int, baseline: int) -> None:
    with store.write() as s:
        rows = []
        for k, run_id in enumerate((mils, small, baseline)):
            for j, metric in enumerate(CORPUS_METRICS):
                rows.append(MetricValue(run_id=run_id, metric=metric, scope="corpus", subject="corpus",
                                        value=0.1 * (k + 1) + 0.01 * j, implementation="test-1"))
            for item_id, in s.execute(select(Caption.item_id).where(Caption.run_id == run_id)):
                rows.append(MetricValue(run_id=run_id, metric="CIDEr", scope="item", subject=f"item:{item_id}",
                                        item_id=item_id, value=0.5, implementation="test-1"))
        # A newer implementation's CIDEr for the MILS run: the queries show the newest value.
        rows.append(MetricValue(run_id=mils, metric="CIDEr", scope="corpus", subject="corpus", value=0.777,
                                implementation="test-2"))
        s.add_all(rows)
        # Candidate CIDEr as `eval --candidates` writes it: one evaluation, typed values (migration 0006).
        evaluation = CandidateEval(run_id=mils, cider_implementation="test-1")
        s.add(evaluation)
        s.flush()
        s.add_all([CandidateEvalValue(eval_id=evaluation.id, candidate_id=cand_id, cider=text_metric(text_sha))
                   for cand_id, text_sha in s.execute(select(Candidate.id, Candidate.text_sha)
                                                      .where(Candidate.run_id == mils))])


def _add_priced_usage(store: Store, mils: int, baseline: int) -> None:
    set_price(store, "tokens_in_1m", "gpt-4-vision-preview", 10.0)
    set_price(store, "tokens_out_1m", "*", 30.0)
    with store.write() as s:
        s.add_all([
            UsageEvent(run_id=mils, stage="generate", device_type="cuda", device_name="NVIDIA A10G",
                       device_seconds=1800.0, wall_seconds=1800.0, items=10, calls=2, cached=3),
            UsageEvent(run_id=mils, stage="encode_text", device_type="cuda", device_name="NVIDIA H100 80GB HBM3",
                       device_seconds=7200.0, wall_seconds=7300.0, items=5, calls=1, cached=0),
            UsageEvent(run_id=baseline, stage="caption", device_type="api", device_name="gpt-4-vision-preview",
                       wall_seconds=12.0, tokens_in=250_000, tokens_out=40_000, images=400, items=400, calls=400),
        ])


def expected_costs(store: Store) -> dict[int, dict[str, float]]:
    """Dollars per run computed in Python from the events and the price table (the rules, re-stated)."""
    with store.read() as s:
        rate = {(p.kind, p.key): p.usd for p in s.scalars(select(Price))}
        events = list(s.scalars(select(UsageEvent)))
        runs = list(s.scalars(select(Run.id)))

    def price(kind: str, key: str | None, fallback: str) -> float:
        if (kind, key) in rate:
            return rate[(kind, key)]
        return rate.get((kind, fallback), 0.0)

    out = {r: {"usd": 0.0, "device_hours": 0.0, "gpu_hours": 0.0, "tokens_usd": 0.0, "images_usd": 0.0}
           for r in runs}
    for e in events:
        row = out[e.run_id]
        hours = e.device_seconds / 3600
        row["device_hours"] += hours
        if e.device_type == "api":
            tokens = (e.tokens_in * price("tokens_in_1m", e.device_name, "*")
                      + e.tokens_out * price("tokens_out_1m", e.device_name, "*")) / 1e6
            images = e.images * price("image", e.device_name, "*")
            row["tokens_usd"] += tokens
            row["images_usd"] += images
            row["usd"] += tokens + images
        else:
            row["usd"] += hours * price("device_hour", e.device_name, "cpu" if e.device_type == "cpu" else "*")
            if e.device_type != "cpu":
                row["gpu_hours"] += hours
    return out


_BUILT: dict[str, AnalysisStore] = {}  # one filled store per database for the whole session


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def analysis_store(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
                   tiny_models) -> AnalysisStore:  # type: ignore[no-untyped-def]
    """The filled store on each database, built on first use and shared (read-only) by every test.

    Cached here rather than as a session fixture so that the modules importing this fixture share
    one store instead of each building its own.
    """
    kind = request.param
    if kind not in _BUILT:
        tmp = tmp_path_factory.mktemp(f"analysis-{kind}")
        if kind == "sqlite":
            db = str(tmp / "store.db")
        else:
            urls = make_pg_url()  # skips when the server is not there
            db = next(urls)
            request.config.add_cleanup(lambda: [None for _ in urls])  # resuming it drops the schema
        _BUILT[kind] = build(db, tmp, tiny_models.specs["scorer"])
        request.config.add_cleanup(_BUILT[kind].store.dispose)
    return _BUILT[kind]


def test_fixture_has_real_runs_and_the_prices_it_relies_on(analysis_store: AnalysisStore) -> None:
    costs = expected_costs(analysis_store.store)
    a10g, star = 0.65 / (31 / 60), 291.66 / 116  # seeded by migration 0002
    assert costs[analysis_store.mils]["usd"] == pytest.approx(0.5 * a10g + 2 * star)
    images = 400 * 5.41 / 5000
    assert costs[analysis_store.baseline]["usd"] == pytest.approx(0.25 * 10 + 0.04 * 30 + images)
    con = connect(analysis_store.store)
    try:
        assert con.execute("SELECT count(*) FROM runs").fetchone() == (3,)
    finally:
        con.close()
