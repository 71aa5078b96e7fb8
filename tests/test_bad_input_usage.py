"""Click's own usage errors are one ``Error:`` line (exit 2), like every other refusal, and write nothing.

Click prints a usage error as three lines (Usage, Try, Error); capstore's group prints the error and
where to find help on one line. A group called without a command still prints its help.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.bad_input import Case, check_case, copy_sqlite, invoke

CASES = [
    Case("unknown-option-top-level", ["--nope", "dataset", "list"], ["No such option", "--nope", "--help"]),
    Case("unknown-command", ["nosuch", "--db", "{db}"], ["No such command 'nosuch'"]),
    Case("unknown-subcommand", ["dataset", "nosuch", "--db", "{db}"], ["No such command 'nosuch'", "dataset"]),
    Case("unknown-option", ["dataset", "list", "--lmit", "3", "--db", "{db}"], ["No such option", "--lmit"]),
    Case("missing-argument", ["dataset", "add", "--images", "{tmp}", "--db", "{db}"], ["Missing argument", "NAME"]),
    Case("missing-required-option", ["dataset", "add", "x", "--db", "{db}"], ["Missing option", "--images"]),
    Case("option-without-value", ["dataset", "add", "x", "--db", "{db}", "--images"], ["--images", "requires"]),
    Case("top-level-db-without-value", ["dataset", "list", "--db"], ["--db", "requires"]),
    Case("extra-argument", ["dataset", "list", "surplus", "--db", "{db}"], ["unexpected extra argument", "surplus"]),
    Case("run-limit-not-a-number", ["run", "--method", "fake", "--limit", "abc", "--db", "{db}"],
         ["--limit", "'abc' is not a valid integer", "run --help"]),
    Case("run-id-not-a-number", ["status", "one", "--db", "{db}"], ["RUN_ID", "'one'"]),
    Case("eval-id-not-a-number", ["eval", "x1", "--db", "{db}"], ["'x1' is not a valid integer"]),
    Case("export-results-missing-file", ["export-results", "1", "--db", "{db}"], ["Missing argument", "FILE"]),
    Case("import-results-missing-label", ["import-results", "{tmp}/r.json", "--dataset", "demo", "--db", "{db}"],
         ["Missing option", "--label"]),
    Case("price-not-a-number", ["prices", "set", "image", "x", "cheap", "--db", "{db}"],
         ["'cheap' is not a valid float"]),
    Case("price-negative-read-as-option", ["prices", "set", "image", "x", "-1", "--db", "{db}"], ["No such option"]),
    Case("sql-unknown-format", ["sql", "SELECT 1", "--format", "xml", "--db", "{db}"], ["--format", "'xml'"]),
    Case("models-tiny-missing-folder", ["models", "tiny"], ["Missing argument", "OUT_DIR"]),
    Case("tiny-seed-not-a-number", ["models", "tiny", "{tmp}/m", "--seed", "x"], ["--seed", "'x'"]),
    Case("db-unknown-subcommand", ["db", "downgrade", "--db", "{db}"], ["No such command 'downgrade'"]),
    Case("runs-delete-id-past-64-bits", ["runs", "delete", "99999999999999999999", "--yes", "--db", "{db}"],
         ["run id 99999999999999999999", "expected a run id"]),
    Case("gc-older-than-huge", ["gc", "--older-than", "1e12", "--db", "{db}"], ["--older-than", "a century"]),
    Case("gc-older-than-inf", ["gc", "--older-than", "inf", "--db", "{db}"], ["--older-than inf", "a century"]),
]


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> str:
    db = str(tmp_path_factory.mktemp("seeded") / "seed.db")
    assert invoke(["dataset", "demo", "--db", db]).exit_code == 0
    return db


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_a_usage_error_is_one_line(case: Case, seeded: str, tmp_path: Path) -> None:
    db = copy_sqlite(seeded, tmp_path / "store.db")
    line = check_case(case, db, tmp_path)
    assert "Usage:" not in line and "Try '" not in line


def test_the_table_is_big_enough() -> None:
    assert len(CASES) >= 20 and len({c.id for c in CASES}) == len(CASES)


def test_a_group_without_a_command_still_prints_its_help() -> None:
    result = invoke(["dataset"])
    assert "Usage:" in result.output and "Commands:" in result.output and "add" in result.output


def test_help_and_version_are_not_errors() -> None:
    assert invoke(["--help"]).exit_code == 0
    version = invoke(["--version"])
    assert version.exit_code == 0 and version.output.startswith("capstore")
