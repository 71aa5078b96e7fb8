"""Migrations: an empty store upgrades to head, the schema matches the models, newer stores are refused."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from click.testing import CliRunner
from sqlalchemy import text

from capstore.cli.main import cli
from capstore.errors import StoreError
from capstore.store import open_store
from capstore.store.migrate import current_revision, head_revision
from capstore.store.schema import Base


def test_upgrade_from_empty_and_current(db_url: str) -> None:
    runner = CliRunner()
    if "://" not in db_url:  # `db current` reads: a missing file is refused (a mistyped --db), an empty one is empty
        open(db_url, "wb").close()
    before = runner.invoke(cli, ["db", "current", "--db", db_url])
    assert before.exit_code == 0 and "(empty)" in before.output
    up = runner.invoke(cli, ["db", "upgrade", "--db", db_url])
    assert up.exit_code == 0, up.output
    after = runner.invoke(cli, ["db", "current", "--db", db_url])
    assert f"revision {head_revision()} (up to date)" in after.output


def test_migrations_match_models(store) -> None:  # type: ignore[no-untyped-def]
    """The schema built by the migrations is the schema the models describe (no hand edits)."""
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    assert diff == []


def test_newer_store_is_refused(db_url: str) -> None:
    store = open_store(db_url)
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999_future'"))
    store.dispose()
    with pytest.raises(StoreError, match="newer capstore"):
        open_store(db_url)
    result = CliRunner().invoke(cli, ["db", "upgrade", "--db", db_url])
    assert result.exit_code == 2
    assert "newer capstore" in result.output and "Traceback" not in result.output


def test_unreachable_database_is_one_line_error() -> None:
    result = CliRunner().invoke(cli, ["db", "current", "--db", "postgresql://postgres@127.0.0.1:1/none"])
    assert result.exit_code == 2
    assert result.output.startswith("Error: cannot reach store") and result.output.count("\n") == 1


def test_missing_folder_is_one_line_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    result = CliRunner().invoke(cli, ["db", "upgrade", "--db", str(tmp_path / "no" / "such" / "x.db")])
    assert result.exit_code == 2 and "does not exist" in result.output


def test_sqlite_pragmas(sqlite_url: str) -> None:
    store = open_store(sqlite_url)
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() > 0
    assert current_revision(store) == head_revision()
