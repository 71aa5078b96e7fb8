"""Bad stores: one line (exit 2) and nothing written, or read-only access that still reads.

A ``--db`` that is not SQLite, a SQLite file of something else, a mistyped path for a command that
only reads, a read-only file system and a full disk. "Nothing written" is checked on the folder
holding the store: the same files (no new store, ``-wal``, ``-shm`` or lock file) with the same bytes.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import sqlite3
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import pytest
from sqlalchemy import event
from sqlalchemy.pool import Pool

from tests.bad_input import assert_refused, copy_sqlite, invoke, snapshot

# ---- what a --db can wrongly be ------------------------------------------------------------------------


def text_file(tmp: Path) -> Path:
    path = tmp / "notes.db"
    path.write_text("these are my notes, not a database\n")
    return path


def png_file(tmp: Path) -> Path:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buf, format="PNG")
    path = tmp / "picture.png"
    path.write_bytes(buf.getvalue())
    return path


def folder(tmp: Path) -> Path:
    path = tmp / "a-folder"
    path.mkdir()
    return path


def fifo(tmp: Path) -> Path:
    path = tmp / "pipe.db"
    os.mkfifo(path)
    return path


def foreign_sqlite(tmp: Path) -> Path:
    """A SQLite database of another program: capstore must not add its tables to it."""
    path = tmp / "other.db"
    with sqlite3.connect(path) as con:
        con.execute("CREATE TABLE recipes (name TEXT, minutes INTEGER)")
        con.execute("INSERT INTO recipes VALUES ('soup', 30)")
    con.close()
    return path


def mistyped(tmp: Path) -> Path:
    return tmp / "capstore.bd"


def missing_folder(tmp: Path) -> Path:
    return tmp / "no-such-folder" / "capstore.db"


READING = [["dataset", "list"], ["dataset", "show", "demo"], ["models", "list"], ["prices", "list"],
           ["db", "current"], ["status", "1"], ["eval", "1"], ["export-results", "1", "{tmp}/out.json"],
           ["sql", "SELECT 1"]]
WRITING = [["dataset", "demo"], ["prices", "set", "image", "x", "1"], ["import-results", "{tmp}/r.json",
                                                                       "--dataset", "demo", "--label", "L"]]

# (id, store maker, command, what the line names)
CASES: list[tuple[str, Callable[[Path], Path | str], list[str], list[str]]] = [
    *[(f"text-file-{'-'.join(c[:2])}", text_file, c, ["{db}", "not a SQLite database"])
      for c in [*READING, *WRITING, ["db", "upgrade"], ["runs", "list"]]],
    *[(f"png-file-{'-'.join(c[:2])}", png_file, c, ["{db}", "not a SQLite database"])
      for c in (["dataset", "list"], ["dataset", "demo"], ["db", "upgrade"])],
    *[(f"folder-{'-'.join(c[:2])}", folder, c, ["{db}", "folder"]) for c in (["dataset", "list"], ["dataset", "demo"])],
    *[(f"fifo-{'-'.join(c[:2])}", fifo, c, ["{db}", "not a regular file"])
      for c in (["prices", "list"], ["dataset", "demo"])],
    *[(f"foreign-sqlite-{'-'.join(c[:2])}", foreign_sqlite, c, ["{db}", "not a capstore store", "recipes",
                                                                  "capstore db upgrade"])
      for c in (["dataset", "list"], ["dataset", "demo"], ["models", "list"], ["prices", "list"],
                ["prices", "set", "image", "x", "1"], ["dataset", "add", "x", "--images", "{tmp}"])],
    *[(f"mistyped-path-{'-'.join(c[:2])}", mistyped, c, ["no store at", "{db}"])
      for c in [*READING, ["import-results", "{tmp}/r.json", "--dataset", "demo", "--label", "L"],
                ["runs", "list"]]],
    ("missing-folder-dataset-demo", missing_folder, ["dataset", "demo"], ["no-such-folder", "does not exist"]),
    ("missing-folder-prices-set", missing_folder, ["prices", "set", "image", "x", "1"], ["no-such-folder"]),
    ("unknown-url-scheme", lambda tmp: "nosuchdb://somewhere/x", ["dataset", "list"],
     ["cannot use database URL nosuchdb://somewhere/x"]),
    ("postgres-unreachable", lambda tmp: "postgresql://postgres@127.0.0.1:1/none", ["prices", "list"],
     ["cannot reach store", "127.0.0.1:1"]),
    ("db-path-with-nul", lambda tmp: f"{tmp}/store\x00.db", ["dataset", "demo"], ["--db", "NUL"]),
]


def _folder_state(path: Path) -> dict[str, str]:
    """Every file of a folder with a digest of its bytes (a FIFO or folder by its kind)."""
    out = {}
    for entry in sorted(path.iterdir()):
        if entry.is_fifo() or entry.is_dir():
            out[entry.name] = "fifo" if entry.is_fifo() else "dir"
        else:
            out[entry.name] = hashlib.sha256(entry.read_bytes()).hexdigest()
    return out


@pytest.mark.parametrize("make, command, culprits", [pytest.param(m, c, k, id=i) for i, m, c, k in CASES])
def test_a_bad_store_is_refused_in_one_line_and_left_alone(make: Callable[[Path], Path | str], command: list[str],
                                                             culprits: list[str], tmp_path: Path) -> None:
    (tmp_path / "r.json").write_text('[{"image_id": "demo-00", "caption": "x"}]')
    db = make(tmp_path)
    before = _folder_state(tmp_path)
    args = [a.format(tmp=tmp_path) for a in command] + ["--db", str(db)]
    assert_refused(invoke(args), [c.format(db=db) for c in culprits])
    assert _folder_state(tmp_path) == before  # no new store, no -wal/-shm/lock file, same bytes


def test_the_table_is_big_enough() -> None:
    ids = [i for i, *_ in CASES]
    assert len(ids) >= 40 and len(set(ids)) == len(ids)


def test_db_upgrade_adds_capstore_to_a_foreign_database_when_asked(tmp_path: Path) -> None:
    other = foreign_sqlite(tmp_path)
    result = invoke(["db", "upgrade", "--db", str(other)])
    assert result.exit_code == 0 and "schema at revision" in result.output, result.output
    assert invoke(["dataset", "demo", "--db", str(other)]).exit_code == 0
    with sqlite3.connect(other) as con:
        assert con.execute("SELECT name, minutes FROM recipes").fetchall() == [("soup", 30)]
    con.close()


@pytest.mark.parametrize("content", [b"", None], ids=["empty-file", "new-file"])
def test_an_empty_or_new_file_becomes_a_store(tmp_path: Path, content: bytes | None) -> None:
    db = tmp_path / "store.db"
    if content is not None:
        db.write_bytes(content)
    result = invoke(["dataset", "demo", "--db", str(db)])
    assert result.exit_code == 0 and "added 24 of 24 items" in result.output, result.output


def test_a_mistyped_path_is_named_and_never_created_for_every_reading_command(tmp_path: Path) -> None:
    """The same on PostgreSQL is not a question: a URL names an existing database or fails to connect."""
    result = invoke(["dataset", "list", "--db", str(tmp_path / "typo.db")])
    assert_refused(result, ["no store at", "typo.db", "--db"])
    assert list(tmp_path.iterdir()) == []


# ---- read-only stores ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The demo dataset and one imported run (run 1), in one SQLite file."""
    folder_ = tmp_path_factory.mktemp("seeded")
    db = str(folder_ / "seed.db")
    assert invoke(["dataset", "demo", "--db", db]).exit_code == 0
    results = folder_ / "r.json"
    results.write_text('[{"image_id": "demo-00", "caption": "a red circle"}]')
    assert invoke(["import-results", str(results), "--dataset", "demo", "--label", "L", "--db", db]).exit_code == 0
    return db


def _mount_tmpfs(where: Path, size: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    where.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}")


def _unmount(where: Path) -> None:
    # Lazy: connections the in-process CLI left open keep the file system busy until collected.
    subprocess.run(["umount", "-l", str(where)], check=True)


@contextmanager
def read_only_store(seeded: str, tmp: Path) -> Iterator[Path]:
    """A copy of ``seeded`` that cannot be written: a read-only tmpfs as root, else chmod."""
    where = tmp / "ro"
    if os.geteuid() == 0:
        _mount_tmpfs(where, "8m")
        try:
            db = Path(copy_sqlite(seeded, where / "store.db"))
            subprocess.run(["mount", "-o", "remount,ro", str(where)], check=True)
            yield db
        finally:
            _unmount(where)
    else:
        where.mkdir()
        db = Path(copy_sqlite(seeded, where / "store.db"))
        db.chmod(0o444)
        where.chmod(0o555)
        try:
            yield db
        finally:
            where.chmod(0o755)
            db.chmod(0o644)


@pytest.mark.parametrize("command, expect", [
    (["dataset", "list"], "demo\ttest\t24 items"),
    (["dataset", "show", "demo"], "split test: 24 items"),
    (["prices", "list"], "device_hour"),
    (["models", "list"], ""),
    (["db", "current"], "up to date"),
    (["status", "1"], "1/1"),
    (["runs", "list"], "external"),
    (["export-results", "1", "{out}"], "wrote 1 captions"),
], ids=lambda v: "-".join(v[:2]) if isinstance(v, list) else None)
def test_reading_commands_work_on_a_read_only_store(seeded: str, tmp_path: Path, command: list[str],
                                                    expect: str) -> None:
    with read_only_store(seeded, tmp_path) as db:
        result = invoke([a.format(out=tmp_path / "out.json") for a in command] + ["--db", str(db)])
        assert result.exit_code == 0, result.output
        assert expect in result.output
        assert sorted(p.name for p in db.parent.iterdir()) == ["store.db"]


@pytest.mark.parametrize("command", [
    ["dataset", "demo", "--name", "again"],
    ["prices", "set", "image", "x", "1"],
    ["import-results", "{results}", "--dataset", "demo", "--label", "other"],
    ["run", "--method", "fake", "--captioner", "fake:echo", "--quiet"],
], ids=lambda c: "-".join(c[:2]))
def test_writing_commands_refuse_a_read_only_store_in_one_line(seeded: str, tmp_path: Path,
                                                               command: list[str]) -> None:
    results = tmp_path / "r.json"
    results.write_text('[{"image_id": "demo-01", "caption": "a blue square"}]')
    with read_only_store(seeded, tmp_path) as db:
        before = snapshot(str(db))
        result = invoke([a.format(results=results) for a in command] + ["--db", str(db)])
        assert_refused(result, [str(db), "read-only", "reading commands work"])
        assert snapshot(str(db)) == before


@pytest.mark.parametrize("file_writable, folder_writable, wal, mode", [
    (False, True, False, "ro"),          # a read-only file in a writable folder: SQLite makes its -shm
    (True, False, False, "immutable"),   # a read-only folder and no -wal: no writer can be at work
    (False, False, True, "ro"),          # a read-only folder with a -wal and -shm left by a writer
])
def test_what_cannot_be_written_is_opened_read_only(seeded: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    file_writable: bool, folder_writable: bool, wal: bool,
                                                    mode: str) -> None:
    """The permission checks without root's bypass (as root a chmod changes nothing): os.access says no."""
    from capstore.store import engine

    db = Path(copy_sqlite(seeded, tmp_path / "store.db"))
    writer = sqlite3.connect(db)
    if wal:  # a writer that is still there: its committed change lives only in the -wal
        writer.execute("PRAGMA wal_autocheckpoint=0")
        writer.execute("UPDATE prices SET source = 'changed by the writer'")
        writer.commit()
    real = os.access

    def access(path, how, **kwargs):  # type: ignore[no-untyped-def]
        if how & os.W_OK and Path(path) == db:
            return file_writable
        if how & os.W_OK and Path(path) == tmp_path:
            return folder_writable
        return real(path, how, **kwargs)

    monkeypatch.setattr(engine.os, "access", access)
    assert engine._sqlite_mode(db) == mode
    listing = invoke(["dataset", "list", "--db", str(db)])
    assert listing.exit_code == 0 and "demo\ttest\t24 items" in listing.output, listing.output
    before = snapshot(str(db))
    refused = invoke(["prices", "set", "image", "x", "1", "--db", str(db)])
    assert_refused(refused, [str(db), "read-only", "not writable"])
    assert snapshot(str(db)) == before
    if wal:  # the reader saw what is only in the -wal
        assert "changed by the writer" in invoke(["prices", "list", "--db", str(db)]).output
    writer.close()


# ---- a full disk -------------------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs (root only; skipped with the reason elsewhere)."""
    where = tmp_path / "disk"
    _mount_tmpfs(where, "2m")
    try:
        yield where
    finally:
        _unmount(where)


def test_a_full_disk_is_one_line_and_the_command_works_once_space_is_freed(seeded: str, small_disk: Path) -> None:
    db = small_disk / "store.db"
    assert invoke(["db", "upgrade", "--db", str(db)]).exit_code == 0
    free = shutil.disk_usage(small_disk).free
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * (free - 48 * 1024))  # leave less than the demo's images need
    before, files = (snapshot(str(db))[0], _content(db)), sorted(p.name for p in small_disk.iterdir())
    assert_refused(invoke(["dataset", "demo", "--db", str(db)]), [str(db), "disk is full", "free space"])
    # The same rows and content; not the same WAL bytes: the failed transaction may have appended
    # frames that no commit covers (SQLite ignores and later overwrites them).
    assert (snapshot(str(db))[0], _content(db)) == before
    assert sorted(p.name for p in small_disk.iterdir()) == files
    filler.unlink()
    result = invoke(["dataset", "demo", "--db", str(db)])
    assert result.exit_code == 0 and "added 24 of 24 items" in result.output, result.output


def _content(db: Path | str) -> str:
    """A digest of what SQLite reads from the store (its SQL dump), whatever the WAL holds beyond it."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        digest = hashlib.sha256("\n".join(con.iterdump()).encode()).hexdigest()
    con.close()
    return digest


@contextmanager
def max_pages(extra: int) -> Iterator[None]:
    """Every SQLite connection opened meanwhile may grow its database by ``extra`` pages only (SQLITE_FULL
    beyond): a full disk without root. ``max_page_count`` is per connection, hence the pool listener."""
    def limit(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
        if isinstance(dbapi_conn, sqlite3.Connection):
            pages = dbapi_conn.execute("PRAGMA page_count").fetchone()[0]
            dbapi_conn.execute(f"PRAGMA max_page_count={pages + extra}")

    event.listen(Pool, "connect", limit)
    try:
        yield
    finally:
        event.remove(Pool, "connect", limit)


def test_database_full_is_one_line_and_nothing_is_half_written(seeded: str, tmp_path: Path) -> None:
    db = copy_sqlite(seeded, tmp_path / "store.db")
    results = tmp_path / "many.json"
    results.write_text("[" + ", ".join(f'{{"image_id": "demo-{i:02d}", "caption": "{"long words " * 400}{i}"}}'
                                       for i in range(24)) + "]")
    before, content = snapshot(db), _content(db)
    with max_pages(2):
        result = invoke(["import-results", str(results), "--dataset", "demo", "--label", "big", "--db", db])
    assert_refused(result, [db, "disk is full"])
    assert snapshot(db)[0] == before[0] and _content(db) == content  # (the WAL may hold uncommitted frames)
    result = invoke(["import-results", str(results), "--dataset", "demo", "--label", "big", "--db", db])
    assert result.exit_code == 0 and "imported" in result.output, result.output


def test_a_run_stopped_by_a_full_disk_resumes_once_space_is_freed(seeded: str, tmp_path: Path) -> None:
    """The run stops with one line; every committed step is whole; ``resume`` finishes it."""
    from sqlalchemy import func, select

    from capstore.store import open_store
    from capstore.store.schema import Caption, Run, WorkItem

    for extra in range(2, 16):  # the first limit at which the run is created but cannot finish
        db = copy_sqlite(seeded, tmp_path / f"store-{extra}.db")
        with max_pages(extra):
            result = invoke(["run", "--method", "fake", "--captioner", "fake:echo", "--batch-images", "1",
                             "--quiet", "--db", db])
        if result.exit_code == 0:
            pytest.fail(f"the run finished within {extra} pages: the limit never stopped it half-way")
        store = open_store(db, upgrade=False)
        with store.read() as s:
            run_id = s.scalar(select(func.max(Run.id)).where(Run.method == "fake"))
        store.dispose()
        if run_id is not None:
            break
    else:
        pytest.fail("no page limit let the run start")
    assert result.exit_code == 2 and result.output.strip().splitlines()[-1].startswith("Error: "), result.output
    assert "disk is full" in result.output and "Traceback" not in result.output
    store = open_store(db, upgrade=False)
    with store.read() as s:
        done = s.scalar(select(func.count()).select_from(WorkItem).where(WorkItem.run_id == run_id,
                                                                         WorkItem.status == "done"))
        captions = s.scalar(select(func.count()).select_from(Caption).where(Caption.run_id == run_id))
    assert 0 <= done < 24 and captions == done  # nothing half-written: a caption for each done item only
    resumed = invoke(["resume", str(run_id), "--quiet", "--db", db])
    assert resumed.exit_code == 0 and "24/24 items done" in resumed.output, resumed.output
    with store.read() as s:
        assert s.scalar(select(func.count(func.distinct(Caption.item_id))).where(Caption.run_id == run_id)) == 24
        assert s.scalar(select(func.count()).select_from(Caption).where(Caption.run_id == run_id)) == 24
    store.dispose()


def test_store_errors_a_user_can_fix_are_named() -> None:
    """PostgreSQL's disk-full and read-only states and psycopg's NUL refusal map to one line, as SQLite's do."""
    from capstore.store.engine import store_error_message

    class PgError(Exception):
        def __init__(self, message: str, sqlstate: str | None) -> None:
            super().__init__(message)
            self.sqlstate = sqlstate

    assert "disk is full" in (store_error_message(PgError("could not extend file: No space left", "53100")) or "")
    assert "read-only" in (store_error_message(PgError("cannot execute INSERT in a read-only transaction",
                                                       "25006")) or "")
    assert "NUL" in (store_error_message(PgError("PostgreSQL text fields cannot contain NUL (0x00) bytes",
                                                 None)) or "")
    assert store_error_message(PgError("deadlock detected", "40P01")) is None  # transient: left to retries
    sqlite_busy = sqlite3.OperationalError("database is locked")
    assert store_error_message(sqlite_busy) is None
