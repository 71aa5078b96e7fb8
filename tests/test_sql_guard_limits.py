"""``capstore sql``'s time limit and row cap, in the library (for any caller) and on the command line."""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path
from typing import Iterator

import pytest
from click.testing import CliRunner, Result

from capstore.analysis.duckdb_store import connect
from capstore.analysis.queries import query_limited
from capstore.analysis.sql_limits import check_limits
from capstore.cli.main import cli
from capstore.datasets import make_demo
from capstore.errors import InputError
from capstore.store import Store, open_store

ENDLESS = "SELECT count(*) FROM range(1000000000000000)"  # hours of counting


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    """One SQLite demo store (24 items, 120 references) for the module; only read."""
    store = open_store(str(tmp_path_factory.mktemp("limits") / "store.db"))
    make_demo(store)
    yield store
    store.dispose()


def test_rows_beyond_the_cap_are_counted_not_kept(demo_store: Store) -> None:
    con = connect(demo_store)
    try:
        result = query_limited(demo_store, "SELECT range AS n FROM range(25000)", con=con, max_rows=10_000)
        whole = query_limited(demo_store, "SELECT ordinal FROM refs WHERE item = 'demo-00'", con=con)
        uncapped = query_limited(demo_store, "SELECT range FROM range(25000)", con=con, max_rows=0)
    finally:
        con.close()
    assert result.table.num_rows == 10_000 and result.total_rows == 25_000 and result.truncated
    assert result.table.column("n").to_pylist() == list(range(10_000))
    assert result.note() == "(showing 10,000 of 25,000 rows; use --out FILE for all)"
    assert (whole.table.num_rows, whole.total_rows, whole.truncated, whole.note()) == (5, 5, False, "(5 rows)")
    assert uncapped.table.num_rows == uncapped.total_rows == 25_000


def test_a_query_past_its_time_limit_stops_and_the_connection_stays_usable(demo_store: Store) -> None:
    con = connect(demo_store)
    try:
        start = time.monotonic()
        with pytest.raises(InputError, match=r"query stopped after the 0\.3 s time limit"):
            query_limited(demo_store, ENDLESS, con=con, timeout=0.3)
        assert time.monotonic() - start < 5
        # A query that ends before its limit leaves no timer behind to interrupt the next one.
        assert query_limited(demo_store, "SELECT 1 AS x", con=con, timeout=0.2).table.num_rows == 1
        time.sleep(0.4)
        assert query_limited(demo_store, "SELECT count(*) AS n FROM refs", con=con, timeout=None
                             ).table.column("n").to_pylist() == [120]
    finally:
        con.close()


@pytest.mark.parametrize(("timeout", "max_rows", "match"), [
    (float("nan"), 10, "--timeout nan"), (-1.0, 10, "--timeout -1"), (float("inf"), 10, "--timeout inf"),
    (1e9, 10, "--timeout 1000000000"), (1.0, -5, "--max-rows -5"),
])
def test_bad_limits_are_one_line_errors(timeout: float, max_rows: int, match: str) -> None:
    with pytest.raises(InputError, match=match):
        check_limits(timeout, max_rows)


def test_zero_means_no_limit() -> None:
    assert check_limits(0, 0) == (None, None) and check_limits(2, 7) == (2.0, 7)


def sql(store: Store, *args: str) -> Result:
    return CliRunner().invoke(cli, ["sql", *args, "--db", store.url.removeprefix("sqlite:///")])


def test_cli_caps_printed_rows_and_says_so(demo_store: Store, tmp_path: Path) -> None:
    table = sql(demo_store, "SELECT ordinal, item FROM refs ORDER BY 2, 1", "--max-rows", "5")
    assert table.exit_code == 0, table.output
    lines = table.stdout.strip().splitlines()
    assert len(lines) == 2 + 5 + 1 and lines[-1] == "(showing 5 of 120 rows; use --out FILE for all)"
    as_csv = sql(demo_store, "SELECT ordinal FROM refs", "--max-rows", "5", "--format", "csv")
    assert len(list(csv.reader(io.StringIO(as_csv.stdout)))) == 1 + 5  # stdout stays one valid CSV
    assert as_csv.stderr.strip() == "(showing 5 of 120 rows; use --out FILE for all)"
    as_json = sql(demo_store, "SELECT ordinal FROM refs", "--max-rows", "5", "--format", "json")
    assert len(json.loads(as_json.stdout)) == 5 and "showing 5 of 120" in as_json.stderr
    out = tmp_path / "all.csv"
    written = sql(demo_store, "SELECT ordinal FROM refs", "--max-rows", "5", "--format", "csv", "--out", str(out))
    assert written.exit_code == 0 and "wrote 120 rows" in written.output
    assert len(out.read_text().splitlines()) == 1 + 120


def test_cli_default_cap_is_ten_thousand(demo_store: Store) -> None:
    result = sql(demo_store, "SELECT range FROM range(12345)")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().splitlines()[-1] == "(showing 10,000 of 12,345 rows; use --out FILE for all)"


@pytest.mark.parametrize(("args", "match"), [
    ([ENDLESS, "--timeout", "0.3"], "time limit"),
    (["SELECT 1", "--timeout", "nan"], "--timeout nan"),
    (["SELECT 1", "--max-rows", "-1"], "--max-rows -1"),
])
def test_cli_limits_errors_are_one_line(demo_store: Store, args: list[str], match: str) -> None:
    result = sql(demo_store, *args)
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and match in lines[0], result.output
