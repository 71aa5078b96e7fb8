"""``capstore sql``: inline or file queries, named parameters, the four formats, one-line errors."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from capstore.analysis.queries import list_queries, load_query, run_query
from capstore.cli.main import cli
from tests.test_analysis_fixtures import AnalysisStore, analysis_store  # noqa: F401


def sql(a: AnalysisStore, *args: str) -> Result:
    return CliRunner().invoke(cli, ["sql", *args, "--db", a.db])


def ok(result: Result) -> str:
    assert result.exit_code == 0, result.output
    return result.output


def refused(result: Result, match: str) -> str:
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and match in lines[0], result.output
    return lines[0]


def test_inline_query_as_a_table(analysis_store: AnalysisStore) -> None:
    out = ok(sql(analysis_store, "SELECT run_id, method FROM runs ORDER BY run_id"))
    lines = out.strip().splitlines()
    assert lines[0].split() == ["run_id", "method"] and lines[-1] == "(3 rows)"
    assert [line.split()[1] for line in lines[2:-1]] == ["mils", "mils", "fake"]


def test_columns_of_the_same_name_both_keep_their_values(analysis_store: AnalysisStore) -> None:
    a = analysis_store
    statement = "SELECT 1 AS a, 2 AS a, 'x' AS b"
    assert ok(sql(a, statement, "--format", "csv")).splitlines() == ["a,a,b", "1,2,x"]
    assert ok(sql(a, statement)).strip().splitlines()[2].split() == ["1", "2", "x"]
    assert run_query(a.store, statement) == (["a", "a", "b"], [(1, 2, "x")])


def test_query_file_by_name_with_params_as_csv_and_json(analysis_store: AnalysisStore) -> None:
    a = analysis_store
    runs = f"{a.mils},{a.baseline}"
    cols, rows = run_query(a.store, load_query("metrics_by_run").text, {"runs": runs})
    table = list(csv.reader(io.StringIO(ok(sql(a, "-f", "metrics_by_run", "--param", f"runs={runs}", "--format", "csv")))))
    assert table[0] == cols and len(table) == 1 + len(rows) == 3
    assert [float(r[cols.index("cider")]) for r in table[1:]] == pytest.approx([r[cols.index("cider")] for r in rows])
    path = str(Path(__file__).resolve().parents[1] / "sql" / "metrics_by_run.sql")
    data = json.loads(ok(sql(a, "-f", path, "--param", f"runs={runs}", "--format", "json")))
    assert [d["run_id"] for d in data] == [r[0] for r in rows] and data[0]["dollars"] == pytest.approx(rows[0][-2])


def test_parquet_needs_out_and_writes_the_rows(analysis_store: AnalysisStore, tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    a = analysis_store
    refused(sql(a, "SELECT 1", "--format", "parquet"), "--out")
    target = tmp_path / "c.parquet"
    out = ok(sql(a, "SELECT candidate_id, text, score FROM candidates WHERE run_id = $r", "--param", f"r={a.mils}",
                 "--format", "parquet", "--out", str(target)))
    table = pq.read_table(target)
    _, rows = run_query(a.store, "SELECT count(*) FROM candidates WHERE run_id = $r", {"r": a.mils})
    assert table.num_rows == rows[0][0] > 0 and f"wrote {table.num_rows} rows" in out
    assert table.column_names == ["candidate_id", "text", "score"]


def test_user_query_file_with_declared_params(analysis_store: AnalysisStore, tmp_path: Path) -> None:
    query = tmp_path / "mine.sql"
    query.write_text("-- Captions of one run.\n-- @param run INTEGER the run\n"
                     "SELECT item, text FROM captions WHERE run_id = $run ORDER BY item\n")
    out = ok(sql(analysis_store, "-f", str(query), "--param", f"run={analysis_store.small_pool}", "--format", "csv"))
    assert len(out.strip().splitlines()) == 1 + 4
    refused(sql(analysis_store, "-f", str(query), "--param", "run=seven"), "is not INTEGER")
    refused(sql(analysis_store, "-f", str(query), "--param", "other=1"), "unknown parameter 'other'")


@pytest.mark.parametrize(("args", "match"), [
    (["DELETE FROM store.runs"], "read-only"),
    (["DROP VIEW runs"], "read-only"),
    (["SELECT 1; DELETE FROM store.runs"], "exactly one"),
    (["SELECT $x"], "--param x="),
    (["SELECT * FROM no_such_view"], "no_such_view"),
    (["SELECT 1", "-f", "metrics_by_run"], "not both"),
    ([], "neither"),
    (["-f", "no_such_query"], "no query file no_such_query"),
    (["SELECT 1", "--param", "novalue"], "NAME=VALUE"),
])
def test_mistakes_are_one_line_errors(analysis_store: AnalysisStore, args: list[str], match: str) -> None:
    refused(sql(analysis_store, *args), match)


def test_writes_leave_the_store_unchanged(analysis_store: AnalysisStore) -> None:
    a = analysis_store
    before = run_query(a.store, "SELECT count(*) FROM store.runs")[1]
    refused(sql(a, "DELETE FROM store.runs"), "read-only")
    assert run_query(a.store, "SELECT count(*) FROM store.runs")[1] == before


def test_list_names_views_and_queries() -> None:
    out = ok(CliRunner().invoke(cli, ["sql", "--list"]))
    for name in ("runs", "candidates", "captions", "metrics", "usage", "costs", "iterations", "errors", "refs"):
        assert f"  {name} " in out
    for query in list_queries():
        assert query.name in out and query.title in out


def test_missing_store_is_an_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["sql", "SELECT 1", "--db", str(tmp_path / "none.db")])
    assert result.exit_code == 2 and "no store at" in result.output
    assert not (tmp_path / "none.db").exists()
