"""The DuckDB view of the store: friendly views equal to the ORM's answers, prices applied, read-only."""

from __future__ import annotations

import duckdb
import pytest
from sqlalchemy import func, select

from capstore.analysis.duckdb_store import connect, libpq_dsn, open_for_reading
from capstore.analysis.queries import run_query
from capstore.errors import InputError, StoreError
from capstore.store.schema import (Candidate, CandidateEval, CandidateEvalValue, Caption, IterationState, Item,
                                   MetricValue, Price, Reference, Text, UsageEvent, WorkItem)
from tests.test_analysis_fixtures import AnalysisStore, analysis_store, expected_costs  # noqa: F401


def _rows(a: AnalysisStore, sql: str, **params: object) -> list[dict[str, object]]:
    cols, rows = run_query(a.store, sql, params)
    return [dict(zip(cols, r)) for r in rows]


def test_candidates_and_captions_views_join_texts_and_items(analysis_store: AnalysisStore) -> None:
    a = analysis_store
    with a.store.read() as s:
        expected = {(ext, it, text, origin, round(score, 6), rank) for ext, it, text, origin, score, rank in s.execute(
            select(Item.external_id, Candidate.iteration, Text.text, Candidate.origin, Candidate.score, Candidate.rank)
            .select_from(Candidate).join(Item, Item.id == Candidate.item_id).join(Text, Text.sha256 == Candidate.text_sha)
            .where(Candidate.run_id == a.mils))}
        captions = {ext: text for ext, text in s.execute(
            select(Item.external_id, Text.text).select_from(Caption).join(Item, Item.id == Caption.item_id)
            .join(Text, Text.sha256 == Caption.text_sha).where(Caption.run_id == a.small_pool))}
    got = _rows(a, "SELECT item, iteration, text, origin, score, rank FROM candidates WHERE run_id = $r", r=a.mils)
    assert {(r["item"], r["iteration"], r["text"], r["origin"], round(r["score"], 6), r["rank"]) for r in got} == expected
    assert len(got) == len(expected) > 0
    got_caps = _rows(a, "SELECT item, text FROM captions WHERE run_id = $r", r=a.small_pool)
    assert {r["item"]: r["text"] for r in got_caps} == captions and len(captions) == 4


def test_runs_view_reads_counts_and_mils_settings(analysis_store: AnalysisStore) -> None:
    a = analysis_store
    runs = {r["run_id"]: r for r in _rows(a, "SELECT * FROM runs")}
    assert set(runs) == {a.mils, a.small_pool, a.baseline}
    assert runs[a.mils]["method"] == "mils" and runs[a.mils]["dataset"] == "demo"
    assert runs[a.mils]["items"] == runs[a.mils]["items_done"] == runs[a.mils]["captions"] == 4
    assert (runs[a.mils]["iterations"], runs[a.mils]["pool_size"], runs[a.mils]["early_stop_patience"]) == (3, None, None)
    assert (runs[a.small_pool]["pool_size"], runs[a.small_pool]["early_stop_patience"]) == (50, 1)
    assert runs[a.baseline]["run_name"] == "echo" and runs[a.baseline]["iterations"] is None
    assert runs[a.mils]["run_name"] == f"mils #{a.mils}"
    assert runs[a.mils]["wall_hours"] >= 0


def test_iterations_work_metrics_refs_views(analysis_store: AnalysisStore) -> None:
    a = analysis_store
    with a.store.read() as s:
        states = {(i, it): sc for i, it, sc in s.execute(
            select(IterationState.item_id, IterationState.iteration, IterationState.best_score)
            .where(IterationState.run_id == a.mils))}
        stopped = s.scalars(select(WorkItem.stopped_early_at).where(WorkItem.run_id == a.small_pool)).all()
        n_metrics = s.scalar(select(func.count()).select_from(MetricValue).where(MetricValue.run_id == a.mils))
        n_metrics += s.scalar(select(func.count()).select_from(CandidateEvalValue).join(
            CandidateEval, CandidateEval.id == CandidateEvalValue.eval_id).where(CandidateEval.run_id == a.mils))
        n_refs = s.scalar(select(func.count()).select_from(Reference))
    got = _rows(a, "SELECT item_id, iteration, best_score, kept FROM iterations WHERE run_id = $r", r=a.mils)
    assert {(r["item_id"], r["iteration"]): r["best_score"] for r in got} == pytest.approx(states)
    assert all(1 <= r["kept"] <= 5 for r in got)
    work = _rows(a, "SELECT stopped_early_at FROM work WHERE run_id = $r", r=a.small_pool)
    assert sorted(r["stopped_early_at"] for r in work) == sorted(stopped) == [1, 1, 1, 1]
    metrics = _rows(a, "SELECT scope, count(*) AS n FROM metrics WHERE run_id = $r GROUP BY scope", r=a.mils)
    assert sum(r["n"] for r in metrics) == n_metrics
    assert {r["scope"] for r in metrics} == {"corpus", "item", "candidate"}
    assert _rows(a, "SELECT count(*) AS n FROM refs")[0]["n"] == n_refs == 24 * 5


def test_costs_price_usage_by_device_tokens_and_images(analysis_store: AnalysisStore) -> None:
    a = analysis_store
    expected = expected_costs(a.store)
    got = {r["run_id"]: r for r in _rows(a, "SELECT * FROM run_costs")}
    for run_id, want in expected.items():
        assert got[run_id]["usd"] == pytest.approx(want["usd"]), run_id
        assert got[run_id]["device_hours"] == pytest.approx(want["device_hours"])
        assert (got[run_id]["gpu_hours"] or 0.0) == pytest.approx(want["gpu_hours"])
    rates = {r["device_name"]: r["device_hour_usd"] for r in _rows(
        a, "SELECT DISTINCT device_name, device_hour_usd FROM costs WHERE device_type <> 'api'")}
    with a.store.read() as s:
        seeded = {p.key: p.usd for p in s.scalars(select(Price).where(Price.kind == "device_hour"))}
    assert rates["NVIDIA A10G"] == pytest.approx(seeded["NVIDIA A10G"])  # its own rate
    assert rates["NVIDIA H100 80GB HBM3"] == pytest.approx(seeded["*"])  # a GPU without one: '*'
    assert rates["fake"] == 0.0  # CPU: the 'cpu' row
    api = _rows(a, "SELECT tokens_in_1m_usd, tokens_out_1m_usd, image_usd, device_usd FROM costs "
                   "WHERE device_type = 'api'")
    assert api == [{"tokens_in_1m_usd": 10.0, "tokens_out_1m_usd": 30.0, "image_usd": pytest.approx(5.41 / 5000),
                    "device_usd": 0.0}]


def test_physical_tables_stay_reachable_in_schema_store(analysis_store: AnalysisStore) -> None:
    a = analysis_store
    with a.store.read() as s:
        n = s.scalar(select(func.count()).select_from(UsageEvent))
        refs = s.scalar(select(func.count()).select_from(Reference))
    assert _rows(a, "SELECT count(*) AS n FROM store.usage_events")[0]["n"] == n
    assert _rows(a, 'SELECT count(*) AS n FROM store."references"')[0]["n"] == refs
    assert _rows(a, "SELECT version_num FROM store.alembic_version")[0]["version_num"]


@pytest.mark.parametrize("statement", ["DELETE FROM runs", "INSERT INTO store.prices VALUES (1)",
                                       "CREATE TABLE x (a INT)", "COPY (SELECT 1) TO 'x.csv'",
                                       "SELECT 1; SELECT 2", "ATTACH 'other.db' AS o", "SET threads = 1"])
def test_only_one_select_runs(analysis_store: AnalysisStore, statement: str) -> None:
    with pytest.raises(InputError, match="read-only|exactly one"):
        run_query(analysis_store.store, statement)


def test_the_attachment_itself_refuses_writes(analysis_store: AnalysisStore) -> None:
    a = analysis_store
    con = connect(a.store, lock=False)
    try:
        schema = con.execute("SELECT DISTINCT schema_name FROM duckdb_tables() WHERE database_name = 'capstore_db'"
                             ).fetchone()[0]
        with pytest.raises(duckdb.Error, match="(?i)read.only"):
            con.execute(f"DELETE FROM capstore_db.{schema}.prices")
        if a.store.dialect == "postgresql":  # a SELECT that runs SQL on the server: a read-only session
            with pytest.raises(duckdb.Error, match="read-only"):
                con.execute("SELECT * FROM postgres_execute('capstore_db', 'DELETE FROM prices')").fetchall()
    finally:
        con.close()
    with a.store.read() as s:
        assert s.scalar(select(func.count()).select_from(Price)) >= 4


def test_user_sql_cannot_touch_files(analysis_store: AnalysisStore, tmp_path) -> None:  # type: ignore[no-untyped-def]
    secret = tmp_path / "secret.csv"
    secret.write_text("a\n1\n")
    with pytest.raises(InputError, match="refusing table function read_csv"):  # the statement check
        run_query(analysis_store.store, f"SELECT * FROM read_csv('{secret}')")
    con = connect(analysis_store.store)  # and, past it, the connection itself
    try:
        with pytest.raises(duckdb.Error, match="disabled by configuration"):
            con.execute(f"SELECT * FROM read_csv('{secret}')")
    finally:
        con.close()


def test_reading_while_a_writer_holds_a_transaction(demo_store) -> None:  # type: ignore[no-untyped-def]
    """A worker mid-transaction on the SQLite file (WAL) does not block or leak into reads."""
    with demo_store.write() as s:
        s.add(Price(kind="device_hour", key="uncommitted-gpu", usd=9.0))
        s.flush()
        cols, rows = run_query(demo_store, "SELECT key FROM prices")
        assert "uncommitted-gpu" not in {r[0] for r in rows} and len(rows) == 4
    cols, rows = run_query(demo_store, "SELECT key FROM prices")
    assert "uncommitted-gpu" in {r[0] for r in rows}


def test_libpq_dsn_from_a_store_url() -> None:
    dsn = libpq_dsn("postgresql+psycopg://me:p%27w@db.example:5433/capdb?sslmode=require&options=-csearch_path%3Dt1")
    assert dsn == ("host='db.example' port='5433' user='me' password='p\\'w' dbname='capdb' sslmode='require' "
                   "options='-csearch_path=t1 -c default_transaction_read_only=on'")


def test_a_missing_sqlite_store_is_an_error_not_a_new_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(StoreError, match="no store at"):
        open_for_reading(str(tmp_path / "nope.db"))
    assert not (tmp_path / "nope.db").exists()
