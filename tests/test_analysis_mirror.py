"""The analysis mirror equals the store after every kind of change capstore makes, on SQLite and PostgreSQL.

Each test changes a small store the way capstore's writers do (bulk commits of steps, work-item
updates, eval replacing metric groups, run deletion, gc) and checks that every mirrored table read
through the mirror equals the same table read from the store directly (``analysis="off"``), row for
row, and that a sync after no change does nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import duckdb
import pytest
from sqlalchemy import select, update

from capstore.analysis.duckdb_store import connect, open_analysis
from capstore.analysis.mirror import mirror_path, sync_mirror
from capstore.analysis.mirror_sync import (APPEND, BY_EVAL, BY_RUN, COUNTED, MIRROR_FORMAT, PASSTHROUGH, ROWID, RULED,
                                          WHOLE)
from capstore.analysis.queries import run_query
from capstore.datasets.importer import ItemSpec, write_split
from capstore.metrics.store_values import replace_candidate_values, replace_values, set_corpus_details, value_row
from capstore.runs.cleanup import collect_garbage, delete_runs
from capstore.runs.steps import CANDIDATE_COLUMNS, CAPTION_COLUMNS, STATE_COLUMNS
from capstore.store import Store, open_store
from capstore.store.bulk import insert_rows
from capstore.store.content import put_texts
from capstore.store.schema import Base, Candidate, Caption, ErrorEvent, IterationState, Item, Run, UsageEvent, WorkItem, utcnow

IMPL = "test-eval-1"


# -- a small store, written the way capstore writes ----------------------------------------------


def make_dataset(store: Store, n: int = 4) -> list[int]:
    specs = [ItemSpec(external_id=str(1000 + k), references=[(f"a photo of thing {k} number {j}", None)
                                                              for j in range(3)]) for k in range(n)]
    write_split(store, "mini", "test", "test", specs, allow_missing=True)
    with store.read() as s:
        return list(s.scalars(select(Item.id).order_by(Item.id)))


def add_run(store: Store, items: list[int], iterations: int = 2, per: int = 3, tag: str = "a") -> int:
    """A MILS-shaped run: candidates, iteration states, captions, work items, usage and an error."""
    now = utcnow()
    with store.write() as s:
        split = s.scalar(select(Item.split_id).where(Item.id == items[0]))
        run = Run(method="mils", config={"iterations": iterations, "tag": tag}, config_hash="0" * 64,
                  split_id=split, status="running")
        s.add(run)
        s.flush()
        run_id = run.id
        s.execute(WorkItem.__table__.insert(), [{"run_id": run_id, "item_id": i, "status": "leased", "attempts": 1,
                                                 "iterations_done": -1, "updated_at": now} for i in items])
    for it in range(iterations):
        add_iteration(store, run_id, items, it, per, tag)
    return run_id


def add_iteration(store: Store, run_id: int, items: list[int], it: int, per: int = 3, tag: str = "a") -> None:
    now = utcnow()
    with store.write(bulk=True) as s:
        cands, states = [], []
        for i in items:
            texts = [f"{tag} caption {j} of item {i} at {it}" for j in range(per)]
            shas = put_texts(s, texts)
            cands += [(run_id, i, it, sha, "generated", 0.1 * j + 0.01 * it, per - j) for j, sha in enumerate(shas)]
            states.append((run_id, i, it, shas[-1], 0.1 * (per - 1), 0.05, per, [[shas[-1], 0.1]], now))
        insert_rows(s, Candidate.__table__, CANDIDATE_COLUMNS, cands)
        insert_rows(s, IterationState.__table__, STATE_COLUMNS, states)
        s.execute(update(WorkItem).where(WorkItem.run_id == run_id).values(iterations_done=it, updated_at=now))
        s.add(UsageEvent(run_id=run_id, stage="generate", device_type="cpu", device_name="cpu", device_seconds=1.5))
        s.add(ErrorEvent(run_id=run_id, item_id=items[0], stage="generate", kind="timeout", message=f"slow at {it}"))


def finish_run(store: Store, run_id: int) -> None:
    now = utcnow()
    with store.write() as s:
        rows = s.execute(select(IterationState.item_id, IterationState.best_text_sha, IterationState.iteration)
                         .where(IterationState.run_id == run_id).order_by(IterationState.iteration)).all()
        best = {i: (sha, it) for i, sha, it in rows}
        s.execute(Caption.__table__.insert(), [dict(zip(CAPTION_COLUMNS, (run_id, i, sha, 0.5, it, now)))
                                               for i, (sha, it) in best.items()])
        s.execute(update(WorkItem).where(WorkItem.run_id == run_id).values(status="done", lease_owner=None))
        s.execute(update(Run).where(Run.id == run_id).values(status="done", finished_at=now))


def evaluate(store: Store, run_id: int, value: float, candidates: bool = True) -> None:
    """What eval writes: corpus and item rows of two metrics, and their candidate values, replacing earlier ones."""
    with store.read() as s:
        items = list(s.scalars(select(Caption.item_id).where(Caption.run_id == run_id)))
    rows = []
    for metric in ("Bleu_4", "CIDEr"):
        rows.append(value_row(run_id, metric, IMPL, value, details={"digest": str(value)}))
        rows += [value_row(run_id, metric, IMPL, value + i / 100, item_id=i) for i in items]
    replace_values(store, run_id, {"Bleu_4": {IMPL}, "CIDEr": {IMPL}}, rows)
    if candidates:
        evaluate_candidates(store, run_id, value)


def evaluate_candidates(store: Store, run_id: int, value: float) -> int:
    """What ``eval --candidates`` writes: a new evaluation of the run's candidates (BLEU-4 and CIDEr-D)."""
    import pyarrow as pa

    with store.read() as s:
        cands = s.execute(select(Candidate.id, Candidate.item_id, Candidate.text_sha)
                          .where(Candidate.run_id == run_id)).all()
    table = pa.table({"candidate_id": [c for c, _, _ in cands], "item_id": [i for _, i, _ in cands],
                      "text_sha": [t for _, _, t in cands], "bleu_4": [value + c / 1000 for c, _, _ in cands],
                      "cider": [value + c / 7 for c, _, _ in cands]})
    return replace_candidate_values(store, run_id, {"Bleu_4": IMPL, "CIDEr": IMPL}, table)[0]


# -- the comparison ------------------------------------------------------------------------------


def table_rows(con: duckdb.DuckDBPyConnection, table: str) -> list[tuple[Any, ...]]:
    described = con.execute(f'DESCRIBE SELECT * FROM store."{table}"').fetchall()
    # Aware timestamps as text: DuckDB needs pytz to hand them to Python.
    cols = ", ".join(f'CAST("{c}" AS VARCHAR)' if "TIME ZONE" in t else f'"{c}"' for c, t, *_ in described)
    return [tuple(str(v) if isinstance(v, (dict, list)) else v for v in row)
            for row in con.execute(f'SELECT {cols} FROM store."{table}" ORDER BY ALL').fetchall()]


def assert_mirror_equals_store(store: Store) -> None:
    mirror, direct = connect(store, passthrough=False), connect(store, analysis="off")
    try:
        for table in sorted(RULED):
            got, want = table_rows(mirror, table), table_rows(direct, table)
            assert got == want, f"{table}: {len(got)} mirrored rows, {len(want)} in the store"
    finally:
        mirror.close()
        direct.close()


def sync_report(store: Store):  # type: ignore[no-untyped-def]
    path = mirror_path(store)
    assert path is not None
    return sync_mirror(store, path)


@pytest.fixture
def mini(store: Store) -> tuple[Store, list[int]]:
    items = make_dataset(store)
    return store, items


# -- tests ---------------------------------------------------------------------------------------


def test_every_table_of_the_schema_has_one_rule() -> None:
    groups = [set(WHOLE), set(COUNTED), set(BY_RUN), set(APPEND), set(ROWID), set(BY_EVAL), set(PASSTHROUGH)]
    assert sum(len(g) for g in groups) == len(set().union(*groups))  # no table in two groups
    assert set(Base.metadata.tables) | {"alembic_version"} == set().union(*groups)


def test_first_query_builds_the_mirror_and_an_unchanged_store_syncs_nothing(mini: tuple[Store, list[int]]) -> None:
    store, items = mini
    run = add_run(store, items)
    finish_run(store, run)
    evaluate(store, run, 0.5)
    con, info = open_analysis(store)
    con.close()
    assert info.path == mirror_path(store) and info.path is not None and info.path.exists()
    assert info.report is not None and info.report.rebuilt and info.report.rows["candidates"] == 4 * 2 * 3
    assert_mirror_equals_store(store)
    con, info = open_analysis(store)  # nothing committed since: no sync at all (or, on PostgreSQL, when
    con.close()                       # another database of the server had a write, a sync that copies nothing)
    assert info.report is None if store.dialect == "sqlite" else (info.report is None or info.report.rows == {})
    assert sync_report(store).rows == {}


def test_new_steps_updates_and_deletions_reach_the_mirror(mini: tuple[Store, list[int]]) -> None:
    store, items = mini
    first = add_run(store, items[:2], tag="first")
    assert_mirror_equals_store(store)
    add_iteration(store, first, items[:2], 2, tag="first")  # new candidates, states, texts, usage, errors
    report = sync_report(store)
    assert report.rows["candidates"] == 2 * 3 and report.rows["iteration_states"] == 2
    assert report.rows["work_items"] == 2  # the run's work items changed: copied again
    finish_run(store, first)
    second = add_run(store, items, tag="second")
    finish_run(store, second)
    evaluate(store, second, 0.3)
    assert_mirror_equals_store(store)
    delete_runs(store, [second])  # the newest run: SQLite gives its ids to the next rows
    report = sync_report(store)
    assert report.removed_runs == [second]
    assert_mirror_equals_store(store)
    third = add_run(store, items[1:], tag="third")  # reuses run and candidate ids on SQLite
    finish_run(store, third)
    evaluate(store, third, 0.7)
    assert_mirror_equals_store(store)
    assert run_query(store, "SELECT count(*) FROM runs")[1] == [(2,)]


def test_metric_groups_replaced_by_eval_are_replaced_in_the_mirror(mini: tuple[Store, list[int]]) -> None:
    store, items = mini
    run = add_run(store, items)
    finish_run(store, run)
    evaluate(store, run, 0.5)
    assert_mirror_equals_store(store)
    evaluate(store, run, 0.6)  # the same groups deleted and inserted again (ids reused on SQLite)
    report = sync_report(store)
    assert report.refetched_groups or report.rows.get("metric_values")
    assert_mirror_equals_store(store)
    # Only candidate values replaced, then the corpus row's details updated (eval --candidates).
    n = evaluate_candidates(store, run, 0.9)
    set_corpus_details(store, run, "CIDEr", IMPL, {"digest": "0.6", "candidates": {"count": n}})
    assert sync_report(store).rows.get("candidate_eval_values") == n
    assert_mirror_equals_store(store)
    replace_values(store, run, {"Bleu_4": {IMPL}}, [])  # a stale metric dropped and not computed again
    assert sync_report(store).rows.get("candidate_eval_values") == n  # its column emptied: fetched again
    assert_mirror_equals_store(store)
    got = run_query(store, "SELECT metric, count(*) FROM metrics WHERE run_id = $r GROUP BY 1 ORDER BY 1",
                    {"r": run})[1]
    assert got == [("CIDEr", 1 + 4 + n)]
    cider = run_query(store, "SELECT candidate_id, value FROM candidate_values WHERE run_id = $r AND metric = 'CIDEr' "
                      "ORDER BY 1", {"r": run})[1]
    assert len(cider) == n and all(v == 0.9 + c / 7 for c, v in cider)  # every bit through the mirror
    # The run, item and iteration the mirror keeps beside the values are the candidates' (as joined directly).
    view = "SELECT * EXCLUDE (created_at) FROM candidate_values ORDER BY ALL"
    direct = connect(store, analysis="off")
    try:
        assert run_query(store, view)[1] == run_query(store, view, con=direct)[1] != []
    finally:
        direct.close()


def test_gc_of_a_deleted_runs_texts_reaches_the_mirror(mini: tuple[Store, list[int]]) -> None:
    store, items = mini
    keep = add_run(store, items, tag="keep")
    gone = add_run(store, items, tag="gone")
    assert_mirror_equals_store(store)
    delete_runs(store, [gone])
    collect_garbage(store, older_than=__import__("datetime").timedelta(0))
    sync_report(store)
    assert_mirror_equals_store(store)
    texts = run_query(store, "SELECT count(*) FROM store.texts WHERE text LIKE 'gone%'")[1]
    assert texts == [(0,)] and keep


def test_texts_given_the_rowids_of_collected_ones_still_show(mini: tuple[Store, list[int]]) -> None:
    """SQLite gives the rowids of collected texts to the next ones: below the mirror's watermark, they
    reach it by sha (the texts the new rows show), and every view shows each row's own text."""
    store, items = mini
    add_run(store, items, tag="keep")
    gone = add_run(store, items, tag="gone")
    sync_report(store)
    delete_runs(store, [gone])
    collect_garbage(store, older_than=__import__("datetime").timedelta(0))
    add_run(store, items, tag="later")  # no sync between: its texts take the collected texts' rowids
    report = sync_report(store)
    assert report.rows["texts"] == len(items) * 2 * 3
    assert_mirror_equals_store(store)
    direct = connect(store, analysis="off")
    try:
        for view in ("SELECT run_id, item, iteration, text, rank FROM candidates ORDER BY ALL",
                     "SELECT run_id, item, iteration, best_text, best_score FROM iterations ORDER BY ALL"):
            got = run_query(store, view)[1]
            assert got == run_query(store, view, con=direct)[1] and got
            assert all(row[3] is not None for row in got)
    finally:
        direct.close()


def test_a_deleted_or_foreign_mirror_is_rebuilt(mini: tuple[Store, list[int]], monkeypatch: pytest.MonkeyPatch) -> None:
    store, items = mini
    add_run(store, items)
    path = mirror_path(store)
    assert path is not None
    sync_report(store)
    path.unlink()
    con, info = open_analysis(store)
    con.close()
    assert info.report is not None and info.report.rebuilt
    path.write_bytes(b"not a duckdb file at all" * 100)  # damaged: only a cache, built again
    assert sync_report(store).rebuilt
    assert_mirror_equals_store(store)
    monkeypatch.setattr("capstore.analysis.mirror._revision", lambda _store: "9999_newer_schema")
    if store.dialect == "sqlite":  # same file, another schema revision: rebuilt in place
        assert sync_report(store).rebuilt
    else:  # PostgreSQL mirrors are named by revision: a new one, and the old one goes
        assert mirror_path(store) != path
        assert sync_report(store).rebuilt and not path.exists()


def test_a_mirror_held_open_by_this_process_falls_back_to_the_store(mini: tuple[Store, list[int]]) -> None:
    store, items = mini
    run = add_run(store, items)
    held = connect(store)  # a notebook's connection keeps the mirror open
    try:
        add_iteration(store, run, items, 5)
        con, info = open_analysis(store)
        try:
            assert info.path is None and info.note and "reading the store directly" in info.note
            assert con.execute("SELECT count(*) FROM candidates").fetchone() == (4 * 3 * 3,)
        finally:
            con.close()
    finally:
        held.close()
    con, info = open_analysis(store)
    con.close()
    assert info.path is not None and info.report is not None and info.report.rows["candidates"] == 12


def test_cli_analysis_option_names_the_mirror_or_turns_it_off(mini: tuple[Store, list[int]], tmp_path: Path) -> None:
    from click.testing import CliRunner

    from capstore.cli.main import cli

    store, items = mini
    add_run(store, items)
    elsewhere = tmp_path / "elsewhere.duckdb"
    for analysis, exists in ((str(elsewhere), True), ("off", False)):
        out = CliRunner().invoke(cli, ["sql", "SELECT count(*) AS n FROM candidates", "--format", "csv",
                                       "--analysis", analysis, "--db", store.url if store.dialect != "sqlite"
                                       else store.url.removeprefix("sqlite:///")])
        assert out.exit_code == 0, out.output
        assert out.stdout.splitlines() == ["n", "24"]
        assert elsewhere.exists() == exists or analysis == "off"


def test_concurrent_readers_syncs_and_a_writer_never_corrupt_it(sqlite_url: str) -> None:
    """Two processes query in a loop (each query syncs first) while this one writes steps."""
    store = open_store(sqlite_url)
    items = make_dataset(store)
    run = add_run(store, items, iterations=1)
    code = ("import sys; from capstore.analysis.duckdb_store import open_for_reading; "
            "from capstore.analysis.queries import run_query\n"
            "store = open_for_reading(sys.argv[1])\n"
            "for _ in range(12):\n"
            "    n = run_query(store, 'SELECT count(*) FROM candidates')[1][0][0]\n"
            "    assert n % 12 == 0, n\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    readers = [subprocess.Popen([sys.executable, "-c", code, sqlite_url], env=env, stderr=subprocess.PIPE)
               for _ in range(2)]
    for it in range(1, 9):
        add_iteration(store, run, items, it)
    errors = [p.communicate(timeout=300)[1].decode() for p in readers]
    assert [p.returncode for p in readers] == [0, 0], errors
    assert_mirror_equals_store(store)
    store.dispose()


@pytest.mark.postgres
def test_postgres_rows_committed_late_below_the_watermark_are_not_missed(pg_url: str) -> None:
    """A transaction that took ids earlier commits after one with higher ids was mirrored."""
    store = open_store(pg_url)
    items = make_dataset(store)
    run = add_run(store, items, iterations=1)
    sync_report(store)
    slow = store.engine.connect()
    tx = slow.begin()
    slow.execute(Candidate.__table__.insert(), [{"run_id": run, "item_id": items[0], "iteration": 7,
                                                 "text_sha": _sha(store, run), "origin": "generated"}])
    add_iteration(store, run, items, 8)  # higher ids, committed first
    sync_report(store)
    tx.commit()
    slow.close()
    sync_report(store)
    assert_mirror_equals_store(store)
    assert run_query(store, "SELECT count(*) FROM candidates WHERE iteration = 7")[1] == [(1,)]
    store.dispose()


def _sha(store: Store, run: int) -> str:
    with store.read() as s:
        return s.scalar(select(Candidate.text_sha).where(Candidate.run_id == run).limit(1))  # type: ignore[return-value]


def test_user_sql_cannot_reach_the_mirror_catalog_or_the_token_source(mini: tuple[Store, list[int]]) -> None:
    from capstore.errors import InputError

    store, items = mini
    add_run(store, items)
    for statement in ("SELECT * FROM analysis.main.candidates", "SELECT * FROM derived.text_tokens",
                      "SELECT * FROM analysis.main._capstore_mirror"):
        with pytest.raises(InputError, match="refusing table"):
            run_query(store, statement)
    assert run_query(store, "SELECT count(*) FROM text_tokens")[1] == [(0,)]


def test_mirror_of_a_read_only_folder_goes_to_the_cache_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    store = open_store(str(folder / "store.db"))
    make_dataset(store)
    store.dispose()
    monkeypatch.setenv("CAPSTORE_CACHE_DIR", str(tmp_path / "cache"))
    folder.chmod(0o555)
    try:
        if os.access(folder, os.W_OK):
            pytest.skip("running as a user who can write any folder")
        store = open_store(str(folder / "store.db"), upgrade=False, create=False)
        path = mirror_path(store)
        assert path is not None and path.parent == tmp_path / "cache" / "analysis"
        assert run_query(store, "SELECT count(*) FROM items")[1] == [(4,)]
        store.dispose()
    finally:
        folder.chmod(0o755)


def test_state_records_what_the_views_need(mini: tuple[Store, list[int]]) -> None:
    store, items = mini
    add_run(store, items)
    path = mirror_path(store)
    assert path is not None
    sync_report(store)
    con = duckdb.connect(str(path), read_only=True)
    try:
        state = json.loads(con.execute("SELECT value FROM _capstore_mirror WHERE key = 'state'").fetchone()[0])
    finally:
        con.close()
    assert set(state["columns"]) == RULED and "_rowid" not in state["columns"]["texts"]
    assert state["identity"].startswith(f"{MIRROR_FORMAT}|{store.dialect}")


def test_large_copies_go_through_the_scanner_in_a_child_process(mini: tuple[Store, list[int]],
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """SQLite: a large first copy (here: any) is read by DuckDB's SQLite scanner in a child process, never in
    this one (its own SQLite library would break the locks of this process's connections); the rows and
    every bit of the candidate values are the same."""
    import capstore.analysis.mirror_sync as mirror_sync
    import capstore.analysis.sqlite_scan as sqlite_scan

    store, items = mini
    if store.dialect != "sqlite":
        pytest.skip("the SQLite scanner")
    run = add_run(store, items)
    finish_run(store, run)
    evaluate(store, run, 0.5)
    scanned: list[str] = []
    child = sqlite_scan.scan_to_parquet

    def recorded(database: str, queries: dict[str, str], folder: Path) -> dict[str, Path]:
        scanned.extend(queries.values())
        return child(database, queries, folder)

    monkeypatch.setattr(sqlite_scan, "scan_to_parquet", recorded)
    monkeypatch.setattr(mirror_sync, "SCANNER_FROM_ROWS", 0)
    assert_mirror_equals_store(store)
    assert any("candidates" in q and "LIMIT 0" not in q for q in scanned)
    assert any("candidate_eval_values" in q and "LIMIT 0" not in q for q in scanned)
    view = "SELECT candidate_id, metric, value FROM candidate_values ORDER BY ALL"
    direct = connect(store, analysis="off")
    try:
        assert run_query(store, view)[1] == run_query(store, view, con=direct)[1] != []
    finally:
        direct.close()
    with store.engine.connect() as conn:  # the store is intact
        assert conn.exec_driver_sql("PRAGMA quick_check").scalar() == "ok"


def test_candidate_shas_and_texts_are_stored_uncompressed(mini: tuple[Store, list[int]], tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The candidates' text shas and texts skip DuckDB's compression (UNCOMPRESSED: it cost a third of a
    new iteration's sync); the same rows in a mirror without that rule are compressed (a dictionary: the
    same 50 texts for every item), so the rule is what keeps them plain."""
    store, items = mini
    run = add_run(store, items, iterations=1)
    with store.write(bulk=True) as s:
        shas = put_texts(s, [f"a repeated caption number {j}" for j in range(50)])
        insert_rows(s, Candidate.__table__, CANDIDATE_COLUMNS,
                    [(run, i, it, sha, "generated", 0.5, j) for i in items for it in range(1, 6) for j, sha in enumerate(shas)])

    def compression(path: Path) -> dict[str, set[str]]:
        sync_mirror(store, path)
        con = duckdb.connect(str(path), read_only=True)
        try:
            rows = con.execute("SELECT column_name, compression FROM pragma_storage_info('candidates') "
                               "WHERE segment_type = 'VARCHAR'").fetchall()
        finally:
            con.close()
        found: dict[str, set[str]] = {}
        for column, kind in rows:
            found.setdefault(column, set()).add(kind)
        return found

    kept = compression(tmp_path / "mirror.duckdb")
    assert kept["text_sha"] == kept["_text"] == {"Uncompressed"}
    assert kept["origin"] != {"Uncompressed"}  # DuckDB still compresses the other columns
    monkeypatch.setattr("capstore.analysis.mirror_sync.UNCOMPRESSED", {})
    plain = compression(tmp_path / "compressed.duckdb")
    assert plain["text_sha"] != {"Uncompressed"} and plain["_text"] != {"Uncompressed"}
    assert_mirror_equals_store(store)
