"""Every shipped query in ``sql/`` runs on a store with real runs and gives what Python computes independently."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from statistics import mean
from typing import Any

import pytest
from sqlalchemy import select

from capstore.analysis.queries import list_queries, load_query, run_query
from capstore.store.schema import Candidate, Caption, IterationState, MetricValue, Run, UsageEvent, WorkItem
from tests.test_analysis_fixtures import (AnalysisStore, analysis_store,  # noqa: F401
                                          expected_costs, text_metric)

SQL_DIR = Path(__file__).resolve().parents[1] / "sql"


def q(a: AnalysisStore, name: str, **params: Any) -> list[dict[str, Any]]:
    cols, rows = run_query(a.store, load_query(name).text, params)
    return [dict(zip(cols, r)) for r in rows]


def by_run(rows: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    return {r["run_id"]: r for r in rows}


def corpus(a: AnalysisStore) -> dict[int, dict[str, float]]:
    """The newest corpus value of each (run, metric), from the ORM."""
    out: dict[int, dict[str, float]] = defaultdict(dict)
    with a.store.read() as s:
        for m in s.scalars(select(MetricValue).where(MetricValue.scope == "corpus").order_by(MetricValue.id)):
            out[m.run_id][m.metric] = m.value
    return out


def test_every_query_file_is_documented_and_shipped() -> None:
    names = {p.stem for p in SQL_DIR.glob("*.sql")}
    queries = {query.name: query for query in list_queries()}
    assert names == set(queries) and len(names) >= 9
    for query in queries.values():
        assert query.title, f"{query.name}: no header comment"
        assert set(query.used) <= set(query.params), f"{query.name}: a $parameter is not declared"
        assert all(p.doc for p in query.params.values()), query.name


def test_metrics_by_run_is_the_side_by_side_table(analysis_store: AnalysisStore) -> None:
    a = analysis_store
    want, costs = corpus(a), expected_costs(a.store)
    rows = by_run(q(a, "metrics_by_run"))
    assert list(rows) == sorted([a.mils, a.small_pool, a.baseline])
    for run_id, row in rows.items():
        assert row["bleu_4"] == pytest.approx(want[run_id]["Bleu_4"])
        assert row["cider"] == pytest.approx(want[run_id]["CIDEr"])
        assert row["clipscore"] == pytest.approx(want[run_id]["CLIPScore"])
        assert row["spice"] is None  # never computed
        assert row["dollars"] == pytest.approx(costs[run_id]["usd"])
        assert row["hours"] == pytest.approx(costs[run_id]["device_hours"])
    assert rows[a.mils]["cider"] == pytest.approx(0.777)  # the newer implementation's value
    assert list(by_run(q(a, "metrics_by_run", runs=f"{a.baseline},{a.mils}"))) == sorted([a.mils, a.baseline])


def test_cost_by_run_and_by_stage(analysis_store: AnalysisStore) -> None:
    a = analysis_store
    costs = expected_costs(a.store)
    rows = by_run(q(a, "cost_by_run"))
    with a.store.read() as s:
        tokens = defaultdict(int)
        for e in s.scalars(select(UsageEvent)):
            tokens[e.run_id] += e.tokens_in
    for run_id, want in costs.items():
        row = rows[run_id]
        assert row["usd"] == pytest.approx(want["usd"])
        assert row["gpu_hours"] == pytest.approx(want["gpu_hours"])
        assert row["tokens_usd"] == pytest.approx(want["tokens_usd"])
        assert row["images_usd"] == pytest.approx(want["images_usd"])
        assert row["tokens_in"] == tokens[run_id]
        assert row["usd_per_1k_captions"] == pytest.approx(1000 * want["usd"] / 4)
    stages = q(a, "cost_by_stage", runs=str(a.mils))
    assert {r["run_id"] for r in stages} == {a.mils}
    assert sum(r["usd"] for r in stages) == pytest.approx(costs[a.mils]["usd"])
    generate_gpu = next(r for r in stages if r["device_name"] == "NVIDIA A10G")
    assert (generate_gpu["stage"], generate_gpu["computed"], generate_gpu["cached"]) == ("generate", 7, 3)


def test_quality_vs_cost_orders_runs_by_dollars(analysis_store: AnalysisStore) -> None:
    a = analysis_store
    want, costs = corpus(a), expected_costs(a.store)
    rows = q(a, "quality_vs_cost", metric="METEOR")
    assert [r["run_id"] for r in rows] == sorted(costs, key=lambda r: (costs[r]["usd"], r))
    for row in rows:
        assert row["metric"] == "METEOR" and row["value"] == pytest.approx(want[row["run_id"]]["METEOR"])
        usd = costs[row["run_id"]]["usd"]
        assert row["value_per_usd"] == (pytest.approx(row["value"] / usd) if usd else None)
    assert q(a, "quality_vs_cost", metric="SPICE") == []  # nobody computed it
    assert {r["metric"] for r in q(a, "quality_vs_cost")} == {"CIDEr"}  # the default


def test_iteration_curve_follows_the_best_so_far_caption(analysis_store: AnalysisStore) -> None:
    a = analysis_store
    with a.store.read() as s:
        states = s.execute(select(IterationState.iteration, IterationState.best_score, IterationState.best_text_sha)
                           .where(IterationState.run_id == a.mils)).all()
    per_iter: dict[int, list[tuple[float, str]]] = defaultdict(list)
    for it, score, sha in states:
        per_iter[it].append((score, sha))
    rows = q(a, "iteration_curve", runs=str(a.mils))
    assert [r["iteration"] for r in rows] == [0, 1, 2, 3]
    for row in rows:
        got = per_iter[row["iteration"]]
        assert row["items"] == len(got) == 4
        assert row["mean_best_score"] == pytest.approx(mean(sc for sc, _ in got))
        assert row["mean_metric"] == pytest.approx(mean(text_metric(sha) for _, sha in got))
        assert row["items_with_metric"] == 4
    assert rows[0]["score_gain"] is None
    assert rows[3]["score_gain"] == pytest.approx(rows[3]["mean_best_score"] - rows[2]["mean_best_score"])
    assert all(r["score_gain"] >= 0 for r in rows[1:])  # the kept best never gets worse
    small = q(a, "iteration_curve", runs=str(a.small_pool))
    assert [r["iteration"] for r in small] == [0, 1] and small[0]["mean_metric"] is None


def test_pool_size_ablation_lists_mils_runs_by_pool(analysis_store: AnalysisStore) -> None:
    a = analysis_store
    with a.store.read() as s:
        pool_best = {r: mean(s.scalars(select(IterationState.best_score).where(
            IterationState.run_id == r, IterationState.iteration == 0))) for r in (a.mils, a.small_pool)}
    rows = q(a, "pool_size_ablation")
    assert [(r["run_id"], r["pool_size"]) for r in rows] == [(a.small_pool, 50), (a.mils, None)]
    for row in rows:
        assert row["pool_best_score"] == pytest.approx(pool_best[row["run_id"]])
        assert row["final_best_score"] >= row["pool_best_score"]
    assert rows[1]["value"] == pytest.approx(0.777)


def test_early_stop_savings(analysis_store: AnalysisStore) -> None:
    a = analysis_store
    with a.store.read() as s:
        work = s.execute(select(WorkItem.iterations_done, WorkItem.stopped_early_at)
                         .where(WorkItem.run_id == a.small_pool)).all()
        iterations = s.get(Run, a.small_pool).config["iterations"]
        usage = [e for e in s.scalars(select(UsageEvent).where(UsageEvent.run_id == a.small_pool))
                 if e.stage not in ("encode_pool", "encode_image")]
    (row,) = q(a, "early_stop_savings")  # the other runs have no early stop
    saved = sum(iterations - done for done, stop in work if stop is not None)
    assert row["run_id"] == a.small_pool and row["items_stopped"] == 4 and row["patience"] == 1
    assert row["iterations_planned"] == 4 * iterations == 12
    assert row["iterations_done"] == sum(done for done, _ in work) == 4
    assert row["iterations_saved"] == saved == 8
    assert row["share_saved"] == pytest.approx(saved / 12)
    hours = sum(e.device_seconds for e in usage) / 3600
    assert row["est_device_hours_saved"] == pytest.approx(saved * hours / 4)


def test_clip_pick_vs_oracle_gap(analysis_store: AnalysisStore) -> None:
    a = analysis_store
    with a.store.read() as s:
        cands = s.execute(select(Candidate.item_id, Candidate.text_sha).where(Candidate.run_id == a.mils)).all()
        caps = dict(s.execute(select(Caption.item_id, Caption.text_sha).where(Caption.run_id == a.mils)).all())
    oracle: dict[int, float] = defaultdict(float)
    for item_id, sha in cands:
        oracle[item_id] = max(oracle[item_id], text_metric(sha))
    pick = {i: text_metric(sha) for i, sha in caps.items()}
    (row,) = q(a, "clip_pick_vs_oracle")  # only the MILS run has candidate metrics
    assert row["run_id"] == a.mils and row["items"] == 4 and row["metric"] == "CIDEr"
    assert row["mean_pick"] == pytest.approx(mean(pick.values()))
    assert row["mean_oracle"] == pytest.approx(mean(oracle[i] for i in pick))
    assert row["mean_gap"] == pytest.approx(mean(oracle[i] - pick[i] for i in pick)) and row["mean_gap"] >= 0
    assert row["share_pick_is_best"] == pytest.approx(mean(pick[i] >= oracle[i] for i in pick))
    assert q(a, "clip_pick_vs_oracle", metric="METEOR") == []


def test_candidates_per_image(analysis_store: AnalysisStore) -> None:
    a = analysis_store
    with a.store.read() as s:
        cands = s.execute(select(Candidate.run_id, Candidate.item_id, Candidate.text_sha)).all()
    per: dict[tuple[int, int], list[str]] = defaultdict(list)
    for run_id, item_id, sha in cands:
        per[(run_id, item_id)].append(sha)
    rows = by_run(q(a, "candidates_per_image"))
    assert set(rows) == {r for r, _ in per}
    for run_id, row in rows.items():
        counts = [len(v) for (r, _), v in per.items() if r == run_id]
        distinct = [len(set(v)) for (r, _), v in per.items() if r == run_id]
        assert (row["items"], row["candidates"], row["min_per_item"], row["max_per_item"]) == (
            len(counts), sum(counts), min(counts), max(counts))
        assert row["per_item"] == pytest.approx(mean(counts))
        assert row["distinct_per_item"] == pytest.approx(mean(distinct))
        assert row["repeats"] == sum(counts) - sum(distinct)


def test_cache_savings(analysis_store: AnalysisStore) -> None:
    a = analysis_store
    with a.store.read() as s:
        events = list(s.scalars(select(UsageEvent)))
    sums: dict[tuple[int, str], list[float]] = defaultdict(lambda: [0, 0, 0, 0.0])
    for e in events:
        acc = sums[(e.run_id, e.stage)]
        acc[0] += e.items
        acc[1] += e.cached
        acc[2] += e.calls
        acc[3] += e.device_seconds
    rows = q(a, "cache_savings")
    assert {(r["run_id"], r["stage"]) for r in rows} == set(sums)
    for row in rows:
        items, cached, calls, seconds = sums[(row["run_id"], row["stage"])]
        assert (row["requests"], row["cached"], row["computed"], row["calls"]) == (items, cached, items - cached, calls)
        assert row["hit_rate"] == (pytest.approx(cached / items) if items else None)
        assert row["device_seconds"] == pytest.approx(seconds)
    # The pool-size run shares the MILS run's scorer and images: its image embeddings all came from the cache.
    small = {r["stage"]: r for r in rows if r["run_id"] == a.small_pool}
    assert small["encode_image"]["hit_rate"] == 1.0


def test_dollar_signs_in_strings_and_comments_are_not_parameters() -> None:
    from capstore.analysis.queries import bind_params, parse_query

    query = parse_query("-- Title: costs in $ (no $param here)\n-- @param runs INTEGER[] the runs\n"
                        "SELECT json_extract(config, '$.pool_size') AS \"$col\" /* $not */ FROM runs\n"
                        "WHERE list_contains($runs, run_id) -- $neither\n")
    assert query.title == "Title: costs in $ (no $param here)" and query.used == ["runs"]
    assert bind_params(query, {"runs": "3, 4"}) == {"runs": [3, 4]}
    assert bind_params(query, {}) == {"runs": None}
