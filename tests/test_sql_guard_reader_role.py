"""Defence in depth on PostgreSQL: ``capstore db reader-role`` makes a role that can only SELECT the
store, and with it configured the DuckDB scanner logs in as that role — so even SQL that got past
the statement check (run here straight on the connection) cannot write, run programs or read
server files."""

from __future__ import annotations

import tempfile
import uuid
from pathlib import Path
from typing import Iterator

import duckdb
import pytest
from click.testing import CliRunner, Result
from sqlalchemy import create_engine, text

from capstore.analysis.duckdb_store import connect, libpq_dsn
from capstore.analysis.reader_role import create_reader_role
from capstore.cli.main import cli
from capstore.datasets import make_demo
from capstore.errors import InputError, StoreError
from capstore.store import Store, open_store
from tests.conftest import PG_URL
from tests.test_sql_guard import pg_checksum

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_store(pg_url: str) -> Iterator[Store]:
    store = open_store(pg_url)
    make_demo(store)
    yield store
    store.dispose()


@pytest.fixture
def role_name() -> Iterator[str]:
    """A role name of this test only; the role (cluster-wide) is dropped afterwards."""
    name = f"capstore_reader_{uuid.uuid4().hex[:10]}"
    yield name
    engine = create_engine(PG_URL)
    with engine.begin() as conn:
        if conn.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :n"), {"n": name}).first():
            conn.exec_driver_sql(f'DROP OWNED BY "{name}"')  # its grants and default privileges
            conn.exec_driver_sql(f'DROP ROLE "{name}"')
    engine.dispose()


def db_cli(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def test_reader_role_is_created_once_and_reads_through_capstore_sql(pg_store: Store, role_name: str,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    first = db_cli("db", "reader-role", "--name", role_name, "--db", pg_store.url)
    assert first.exit_code == 0, first.output
    assert f"role {role_name} created" in first.output and f"CAPSTORE_READER_ROLE={role_name}" in first.output
    again = db_cli("db", "reader-role", "--name", role_name, "--db", pg_store.url)
    assert again.exit_code == 0 and f"role {role_name} updated" in again.output  # idempotent
    monkeypatch.setenv("CAPSTORE_READER_ROLE", role_name)
    result = db_cli("sql", 'SELECT count(*) FROM store."references"', "--format", "csv", "--db", pg_store.url)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[1] == "120"


def test_past_the_statement_check_the_reader_role_still_cannot_write(pg_store: Store, role_name: str) -> None:
    create_reader_role(pg_store, role_name)
    marks = Path(tempfile.mkdtemp(prefix="capstore-marks-"))
    marks.chmod(0o777)  # writable by the server's user: only the role's rights stop the program
    marker = marks / "marker"
    before = pg_checksum(pg_store, "pwned_by_reader")()
    con = connect(pg_store, reader_role=role_name)
    try:
        who = con.execute("SELECT * FROM postgres_query('capstore_db', 'SELECT current_user')").fetchall()
        assert who == [(role_name,)]
        denied = "permission denied|must be superuser"
        for statement in [
            f"CALL postgres_execute('capstore_db', 'COPY (SELECT 1) TO PROGRAM ''touch {marker}''')",
            "SELECT * FROM postgres_query('capstore_db', 'SELECT pg_read_file(''/etc/hostname'')')",
            # A read-only session is only a default, and SET ROLE can be undone; a login role cannot.
            "CALL postgres_execute('capstore_db', 'COMMIT; SET ROLE NONE; BEGIN READ WRITE; "
            "CREATE TABLE pwned_by_reader (a int); COMMIT')",
            "CALL postgres_execute('capstore_db', 'COMMIT; BEGIN READ WRITE; DELETE FROM prices; COMMIT')",
        ]:
            with pytest.raises(duckdb.Error, match=denied):
                con.execute(statement).fetchall()
    finally:
        con.close()
    assert not marker.exists()
    marks.rmdir()
    assert pg_checksum(pg_store, "pwned_by_reader")() == before


def test_reader_role_reads_tables_created_later(pg_store: Store, role_name: str) -> None:
    create_reader_role(pg_store, role_name)
    with pg_store.engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE later_table (a int)")
        conn.exec_driver_sql("INSERT INTO later_table VALUES (1), (2)")
    con = connect(pg_store, reader_role=role_name)
    try:
        assert con.execute("SELECT count(*) FROM store.later_table").fetchall() == [(2,)]
    finally:
        con.close()


def test_a_role_that_can_write_is_refused(pg_store: Store, role_name: str) -> None:
    create_reader_role(pg_store, role_name)
    with pg_store.engine.begin() as conn:
        conn.exec_driver_sql(f'GRANT INSERT ON prices TO "{role_name}"')
    with pytest.raises(StoreError, match=rf"role {role_name} can do more than read the store \(write grants on prices"):
        connect(pg_store, reader_role=role_name)
    result = db_cli("db", "reader-role", "--name", role_name, "--db", pg_store.url)
    assert result.exit_code == 2 and "can do more than read" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_missing_or_malformed_roles_are_one_line_errors(pg_store: Store, role_name: str, tmp_path: Path) -> None:
    with pytest.raises(StoreError, match=f"no PostgreSQL role {role_name}: create it with"):
        connect(pg_store, reader_role=role_name)
    with pytest.raises(InputError, match="reader role 'Bad Name'"):
        connect(pg_store, reader_role="Bad Name")
    result = db_cli("sql", "SELECT 1", "--reader-role", "x; DROP", "--db", pg_store.url)
    assert result.exit_code == 2 and "reader role 'x; DROP'" in result.output
    sqlite = db_cli("db", "reader-role", "--db", str(tmp_path / "s.db"))
    assert sqlite.exit_code == 2 and len(sqlite.output.strip().splitlines()) == 1


def test_the_dsn_logs_in_as_the_role_without_the_users_password() -> None:
    dsn = libpq_dsn("postgresql+psycopg://admin:secret@db.example/capdb?options=-csearch_path%3Dt1", "reader")
    assert dsn == ("host='db.example' user='reader' dbname='capdb' "
                   "options='-csearch_path=t1 -c default_transaction_read_only=on'")
