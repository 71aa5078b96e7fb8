"""Read-only commands never write, reach only the store, and user path mistakes are one line."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from capstore.cli.main import cli


def _invoke(*args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(cli, list(args))


def test_sql_does_not_turn_another_file_into_a_store(tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as con:
        con.execute("CREATE TABLE t (x)")
    result = _invoke("--db", str(other), "sql", "SELECT 1")
    assert result.exit_code == 2 and "is not a capstore store" in result.output
    with sqlite3.connect(other) as con:
        assert [r[0] for r in con.execute("SELECT name FROM sqlite_master")] == ["t"]  # untouched


def test_scanner_functions_are_refused(demo_store, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    db = demo_store.url.replace("sqlite:///", "")
    secret = tmp_path / "secret.db"
    with sqlite3.connect(secret) as con:
        con.execute("CREATE TABLE s (x)")
    for query in (f"SELECT * FROM sqlite_scan('{secret}', 's')", f"SELECT * FROM SQLITE_ATTACH('{secret}')"):
        result = _invoke("--db", db, "sql", query)
        assert result.exit_code == 2 and re.search(r"refusing (table function )?sqlite_", result.output.lower()), result.output
    assert _invoke("--db", db, "sql", "SELECT count(*) AS n FROM items").exit_code == 0


def test_output_path_mistakes_are_one_line(demo_store, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    db = demo_store.url.replace("sqlite:///", "")
    folder = tmp_path / "adir"
    folder.mkdir()
    result = _invoke("--db", db, "sql", "SELECT 1", "--format", "csv", "--out", str(folder))
    assert result.exit_code == 2 and "Traceback" not in result.output and "adir" in result.output
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize("args", [["eval", "1"], ["export-results", "1", "out.json"], ["status", "1"],
                                  ["resume", "1", "--quiet"]])
def test_commands_that_read_a_store_refuse_a_missing_one_instead_of_creating_it(tmp_path, args) -> None:  # type: ignore[no-untyped-def]
    missing = tmp_path / "typo.db"
    result = CliRunner().invoke(cli, ["--db", str(missing), *[str(tmp_path / a) if a.endswith(".json") else a
                                                               for a in args]])
    assert result.exit_code == 2, result.output
    assert result.output.startswith("Error: no store at") and result.output.count("\n") == 1
    assert not missing.exists()


def test_undeclared_query_parameters_become_numbers_only_when_they_read_back_the_same() -> None:
    from capstore.analysis.queries import _infer

    assert _infer("12") == 12 and _infer("-3") == -3 and _infer("0.25") == 0.25 and _infer("1e3") == 1000.0
    assert _infer("007") == "007" and _infer("nan") == "nan" and _infer("a red, round thing") == "a red, round thing"
