"""Bringing the analysis mirror up to date: what changed in the store since the last sync, table by table.

Each physical table of the store has one rule, chosen from how capstore writes it (a test checks
that every table of the schema has exactly one):

- ``WHOLE`` (runs, datasets, splits, models, prices, text sets, candidate evaluations, the schema
  revision): tiny, copied whole when a digest of their rows changed. Runs are compared first: a run that is gone, or whose id
  now names another run (SQLite reuses the highest ids), has its rows purged from every run table.
- ``COUNTED`` (items, references, images, image files, pool members): written by dataset imports and
  removed only by ``gc``; copied whole when a fingerprint (count, max and sum of the key) changes.
- ``BY_RUN`` (work items, captions): updated in place while a run works; a fingerprint per run
  (counts, sums, latest timestamps), and the rows of each run whose fingerprint changed are copied again.
- ``APPEND`` (candidates, usage events, errors, metric values): append-only by integer id. Rows with
  an id above the low watermark are fetched. On SQLite (one writer; ids in commit order) the
  watermark is the mirror's own largest id, recomputed after purges (SQLite gives a deleted top id
  to the next row). On PostgreSQL ids are taken from sequences before commit, so a transaction still
  in flight can commit ids below ones already seen: the watermark only moves up to the largest id of
  an earlier sync once every transaction in flight at that sync has finished (``pg_current_snapshot``),
  and the rows above it are fetched again and de-duplicated by id.
- ``ROWID`` (texts, iteration states; no integer id): on SQLite by ``rowid`` as above; on PostgreSQL
  by the inserting transaction (``age(xmin)``: rows of every transaction not finished at the last sync).
- ``BY_EVAL`` (candidate_eval_values: BLEU-4 and CIDEr-D of candidates): by evaluation. An
  evaluation's values are written with its ``candidate_evals`` row and never change unless that row
  does (a column emptied), and evaluation ids are never reused: the values of evaluations that are
  new or whose row changed are fetched, those of evaluations gone are dropped.
- ``PASSTHROUGH`` (embedding, score and generation caches, image blobs): vectors, bytes and raw
  outputs, not mirrored; ``store.<table>`` reads them from the store through the scanner.

Metric values are also replaced, not only appended: ``capstore eval`` deletes a (run, metric,
implementation) group and inserts it again, its corpus row with it (or updates the corpus row's
details when only candidate values were replaced). Every sync therefore compares the corpus rows of
every run with the store's (a few index look-ups) and fetches again the groups whose corpus row
changed. Texts referenced by new rows but missing from the mirror are fetched by sha, so a view's
join never misses a text. After a run deletion, texts that ``gc`` removed are removed too.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Sequence

from capstore.analysis.mirror_source import SOURCE, PostgresSource, Source, SqliteSource, quote_ident

if TYPE_CHECKING:
    import duckdb

MIRROR_FORMAT = 3  # 2: candidate_eval_values (schema 0006) with their run, item and iteration; 3: UNCOMPRESSED
META = "_capstore_mirror"
WHOLE = ("alembic_version", "datasets", "splits", "models", "prices", "text_sets", "runs", "candidate_evals")
COUNTED: dict[str, str] = {
    "images": "count(*), max(sha256), max(created_at)",
    "image_files": "count(*), max(id), sum(id)",
    "items": "count(*), max(id), sum(id)",
    "references": "count(*), max(id), sum(id)",
    "text_set_members": "count(*), max(set_sha), sum(ordinal)",
}
BY_RUN: dict[str, str] = {
    "work_items": ("count(*), sum(id), sum(iterations_done), sum(attempts), sum(coalesce(stopped_early_at, -1)), "
                   "count(lease_owner), max(updated_at), max(lease_expires_at), "
                   "sum(CASE status WHEN 'done' THEN 1 WHEN 'failed' THEN 1000 WHEN 'leased' THEN 1000000 ELSE 0 END)"),
    # An updated caption keeps its created_at: its text sha goes into the sums as a number (4 hex digits).
    "captions": ("count(*), sum(item_id), sum(coalesce(iteration, -1)), min(created_at), max(created_at), "
                 "sum({sha_code}), sum({sha_code} * (item_id % 97))"),
}


def sha_code(dialect: str, column: str) -> str:
    """SQL for a number made of the first 4 characters of a hex sha (distinct shas: distinct numbers, mostly)."""
    code = "unicode" if dialect == "sqlite" else "ascii"
    return " + ".join(f"CAST({code}(substr({column}, {k}, 1)) AS BIGINT) * {128 ** (4 - k)}" for k in range(1, 5))
APPEND = ("candidates", "usage_events", "errors", "metric_values")
ROWID: dict[str, tuple[str, ...]] = {"texts": ("sha256",), "iteration_states": ("run_id", "item_id", "iteration")}
BY_EVAL = ("candidate_eval_values",)
PASSTHROUGH = ("embedding_cache", "score_sets", "generation_cache", "image_blobs")
RULED = frozenset((*WHOLE, *COUNTED, *BY_RUN, *APPEND, *ROWID, *BY_EVAL))
RUN_TABLES = ("metric_values", "candidates", "iteration_states", "usage_events", "errors", "work_items", "captions")
TEXT_REFERENCES = {"candidates": "text_sha", "iteration_states": "best_text_sha", "captions": "text_sha",
                   "references": "text_sha", "text_set_members": "text_sha"}
# Columns the mirror adds to a table, so that a view needs no join with the 1M-row texts table (or
# no JSON parsing) to show them, and candidate values need none with the 2.5M candidates to be
# filtered by run or item: name -> (type, expression over the staged row ``s``, its text ``x`` and
# its candidate ``k``).
DERIVED: dict[str, dict[str, tuple[str, str]]] = {
    "candidate_eval_values": {"_run_id": ("BIGINT", "k.run_id"), "_item_id": ("BIGINT", "k.item_id"),
                              "_iteration": ("BIGINT", "k.iteration")},
    "candidates": {"_text": ("VARCHAR", "x.text")},
    "captions": {"_text": ("VARCHAR", "x.text")},
    "references": {"_text": ("VARCHAR", "x.text")},
    "iteration_states": {"_best_text": ("VARCHAR", "x.text"),
                         "_kept": ("BIGINT", "json_array_length(CAST(s.kept AS VARCHAR))")},
}
TEXT_OF = {"candidates": "text_sha", "captions": "text_sha", "references": "text_sha",
           "iteration_states": "best_text_sha"}
# Columns stored without compression: a candidate's sha (random hex) and text compress little, and
# compressing 250K of them took a third of a new iteration's sync (insert and checkpoint 0.6-0.74 s,
# 0.41 s without; scans of them are faster too; the candidates take ~2x the space).
UNCOMPRESSED: dict[str, tuple[str, ...]] = {"candidates": ("text_sha", "_text")}
SCANNER_FROM_ROWS = 500_000  # a first copy of more rows than this goes through DuckDB's SQLite scanner


@dataclass
class SyncReport:
    """What a sync did: rows added (or copied) per table, runs purged, seconds."""

    rows: dict[str, int] = field(default_factory=dict)
    removed_runs: list[int] = field(default_factory=list)
    refetched_groups: int = 0
    rebuilt: bool = False
    seconds: float = 0.0  # the sync's own work (the tables)
    checkpoint_seconds: float = 0.0  # writing it to the file, for readers

    def add(self, table: str, n: int) -> None:
        if n:
            self.rows[table] = self.rows.get(table, 0) + n


def mirrored_tables(columns: dict[str, list[str]]) -> list[str]:
    """The tables of ``columns`` the mirror holds: those with a rule; any other table (the caches, or
    one a later migration adds before it gets a rule) is read from the store."""
    return [t for t in columns if t in RULED]


def read_state(w: "duckdb.DuckDBPyConnection") -> dict[str, Any] | None:
    """The mirror's recorded state, or None for an empty or foreign file."""
    found = w.execute("SELECT count(*) FROM duckdb_tables() WHERE database_name = current_database() "
                      "AND schema_name = 'main' AND table_name = ?", [META]).fetchone()
    if not found or not found[0]:
        return None
    row = w.execute(f"SELECT value FROM main.{META} WHERE key = 'state'").fetchone()
    return json.loads(row[0]) if row else None


def write_state(w: "duckdb.DuckDBPyConnection", state: dict[str, Any]) -> None:
    w.execute(f"CREATE TABLE IF NOT EXISTS main.{META} (key VARCHAR PRIMARY KEY, value VARCHAR)")
    w.execute(f"INSERT OR REPLACE INTO main.{META} VALUES ('state', ?)", [json.dumps(state)])


def reset_mirror(w: "duckdb.DuckDBPyConnection", schema: str, columns: dict[str, list[str]]) -> None:
    """Drop every mirrored table and create them empty, typed as the store's scanner reads them."""
    for (name,) in w.execute("SELECT table_name FROM duckdb_tables() WHERE database_name = current_database() "
                             "AND schema_name = 'main'").fetchall():
        if name not in ("text_tokens", "token_words"):  # derived from texts alone: kept across rebuilds
            w.execute(f"DROP TABLE main.{quote_ident(name)}")
    from capstore.metrics.text_tokens import create_token_tables

    create_token_tables(w)
    for table in mirrored_tables(columns):
        extra = ", CAST(NULL AS BIGINT) AS _rowid" if table in ROWID else ""
        extra += "".join(f", CAST(NULL AS {t}) AS {name}" for name, (t, _) in DERIVED.get(table, {}).items())
        cols = ", ".join(quote_ident(c) for c in columns[table])
        select = f"SELECT {cols}{extra} FROM {SOURCE}.{quote_ident(schema)}.{quote_ident(table)} LIMIT 0"
        if table not in UNCOMPRESSED:
            w.execute(f"CREATE TABLE main.{quote_ident(table)} AS {select}")
            continue
        plain = UNCOMPRESSED[table]
        defs = ", ".join(f"{quote_ident(name)} {kind}" + (" USING COMPRESSION uncompressed" if name in plain else "")
                         for name, kind, *_ in w.execute(f"DESCRIBE {select}").fetchall())
        w.execute(f"CREATE TABLE main.{quote_ident(table)} ({defs})")


def sync_tables(w: "duckdb.DuckDBPyConnection", source: Source, state: dict[str, Any],
                columns: dict[str, list[str]]) -> SyncReport:
    """Bring every mirrored table up to date from ``source``; updates ``state`` in place."""
    started = time.perf_counter()
    report = SyncReport()
    tables = state.setdefault("tables", {})
    snapshot = _Snapshot.of(source)
    new_shas: list[str] = []  # staging tables whose text shas must be in the mirror
    inserts = _Inserts(w, report)
    runs = _sync_runs(w, source, columns, inserts, tables)
    for table in WHOLE:
        if table != "runs" and _changed(source, table, tables):
            _replace_all(w, source, table, columns, inserts)
    sqlite = isinstance(source, SqliteSource)
    texts_staged = sqlite
    if sqlite:  # staged now, inserted with the others' texts (_settle_texts)
        _sync_rowid(w, source, "texts", ROWID["texts"], columns, tables.setdefault("texts", {}), snapshot, inserts)
    for table, fingerprint in COUNTED.items():
        got = _jsonable(source.rows(f"SELECT {fingerprint} FROM {quote_ident(table)}"))
        if tables.get(table, {}).get("fingerprint") != got or report.removed_runs:
            _replace_all(w, source, table, columns, inserts, stage=f"_stage_{table}")
            tables[table] = {"fingerprint": got}
            if table in TEXT_REFERENCES:
                new_shas.append(f"_stage_{table}")
    for table, fingerprint in BY_RUN.items():
        changed = _sync_by_run(w, source, table, fingerprint, columns, tables.setdefault(table, {}), inserts)
        if changed and table in TEXT_REFERENCES:
            new_shas.append(f"_stage_{table}")
    low_before = {}
    for table in APPEND:
        low_before[table] = _sync_append(w, source, table, columns, tables.setdefault(table, {}), snapshot, inserts)
        if table in TEXT_REFERENCES:
            new_shas.append(f"_stage_{table}")
    # On PostgreSQL texts and iteration states are found by a scan of their transaction ids: done only
    # when something else changed (capstore writes them in the transactions that write work items,
    # candidates, pools or runs), or when a transaction was in flight at the last sync.
    if sqlite or inserts.any or tables.get("texts", {}).get("in_flight") or snapshot.in_flight:
        if not sqlite:
            _sync_rowid(w, source, "texts", ROWID["texts"], columns, tables.setdefault("texts", {}), snapshot, inserts)
            tables["texts"]["in_flight"] = bool(snapshot.in_flight)
            texts_staged = True
        _sync_rowid(w, source, "iteration_states", ROWID["iteration_states"], columns,
                    tables.setdefault("iteration_states", {}), snapshot, inserts)
        new_shas.append("_stage_iteration_states")
    _settle_texts(w, source, new_shas, texts_staged, report)
    inserts.flush()
    _sync_metric_groups(w, source, runs, low_before["metric_values"], columns, inserts)
    _sync_eval_values(w, source, tables.setdefault("candidate_eval_values", {}), inserts)
    # Values of candidates not in the mirror when copied (none expected: an evaluation reads committed
    # candidates): their run, item and iteration once the candidates are there.
    w.execute("UPDATE main.candidate_eval_values AS v SET _run_id = k.run_id, _item_id = k.item_id, "
              "_iteration = k.iteration FROM main.candidates k WHERE v._run_id IS NULL AND k.id = v.candidate_id")
    if report.removed_runs:
        _drop_removed_texts(w, source, report)
    report.seconds = time.perf_counter() - started
    return report


# -- runs and whole tables ---------------------------------------------------------------------


def _changed(source: Source, table: str, tables: dict[str, Any]) -> bool:
    """Whether a small table differs from the last sync: a digest of all its rows (they are few)."""
    rows = source.rows(f"SELECT * FROM {quote_ident(table)}")
    digest = hashlib.sha256(repr(sorted(map(repr, rows))).encode()).hexdigest()
    if tables.get(table, {}).get("digest") == digest:
        return False
    tables[table] = {"digest": digest}
    return True


def _sync_runs(w: "duckdb.DuckDBPyConnection", source: Source, columns: dict[str, list[str]],
               inserts: "_Inserts", tables: dict[str, Any]) -> list[int]:
    """Copy the runs; purge the rows of runs that are gone or whose id now names another run."""
    store_runs = {int(i): _as_utc(c) for i, c in source.rows("SELECT id, created_at FROM runs")}
    mirror_runs = {int(i): _as_utc(c) for i, c in w.execute(
        "SELECT id, CAST(created_at AS TIMESTAMP) FROM main.runs").fetchall()}
    removed = sorted(i for i, created in mirror_runs.items() if store_runs.get(i, "gone") != created)
    if removed:
        ids = ", ".join(map(str, removed))
        w.execute(f"DELETE FROM main.metric_values WHERE run_id IN ({ids}) OR candidate_id IN "
                  f"(SELECT id FROM main.candidates WHERE run_id IN ({ids}))")
        for table in RUN_TABLES[1:]:
            w.execute(f"DELETE FROM main.{quote_ident(table)} WHERE run_id IN ({ids})")
        w.execute(f"DELETE FROM main.candidate_evals WHERE run_id IN ({ids})")  # their values: by _sync_eval_values
        inserts.report.removed_runs = removed
    if _changed(source, "runs", tables) or removed:
        _replace_all(w, source, "runs", columns, inserts)
    return sorted(store_runs)


def _replace_all(w: "duckdb.DuckDBPyConnection", source: Source, table: str, columns: dict[str, list[str]],
                 inserts: "_Inserts", stage: str = "_stage") -> None:
    cols, types = _stage_columns(w, table)
    source.stage(w, stage, table, cols, types)
    w.execute(f"DELETE FROM main.{quote_ident(table)}")
    inserts.add(table, stage)


def _sync_by_run(w: "duckdb.DuckDBPyConnection", source: Source, table: str, fingerprint: str,
                 columns: dict[str, list[str]], state: dict[str, Any], inserts: "_Inserts") -> bool:
    """Copy again the rows of each run whose fingerprint changed; drop those of runs gone."""
    fingerprint = fingerprint.format(sha_code=f"({sha_code(source.dialect, 'text_sha')})")
    got = {str(r[0]): _jsonable(r[1:]) for r in source.rows(
        f"SELECT run_id, {fingerprint} FROM {quote_ident(table)} GROUP BY run_id")}
    known = state.get("runs", {})
    changed = sorted(int(r) for r, fp in got.items() if known.get(r) != fp)
    gone = sorted(int(r) for r in known if r not in got)
    if not changed and not gone:
        return False
    ids = ", ".join(map(str, changed + gone))
    w.execute(f"DELETE FROM main.{quote_ident(table)} WHERE run_id IN ({ids})")
    cols, types = _stage_columns(w, table)
    stage = f"_stage_{table}"
    if changed:
        listed = ", ".join(map(str, changed))
        source.stage(w, stage, table, cols, types, where=f"WHERE run_id IN ({listed})")
        inserts.add(table, stage)
    else:
        source.stage(w, stage, table, cols, types, where="WHERE 1 = 0")
    state["runs"] = got
    return True


# -- append-only tables ------------------------------------------------------------------------


@dataclass
class _Snapshot:
    """PostgreSQL's snapshot of the control reads: transactions in flight and the oldest of them (xmin)."""

    xmin: int = 0
    in_flight: list[int] = field(default_factory=list)

    @classmethod
    def of(cls, source: Source) -> "_Snapshot":
        if not isinstance(source, PostgresSource):
            return cls()
        xmin, _xmax, xip = source.snapshot.split(":")
        return cls(int(xmin), [int(x) for x in xip.split(",") if x])


def _sync_append(w: "duckdb.DuckDBPyConnection", source: Source, table: str, columns: dict[str, list[str]],
                 state: dict[str, Any], snapshot: _Snapshot, inserts: "_Inserts") -> int:
    """Fetch the rows above the low watermark; returns the mirror's largest id before them (every row
    above it now in the mirror was read by this sync)."""
    top = source.rows(f"SELECT max(id) FROM {quote_ident(table)}")[0][0] or 0
    mirror_top = int(w.execute(f"SELECT coalesce(max(id), 0) FROM main.{quote_ident(table)}").fetchone()[0])  # type: ignore[index]
    cols, types = _stage_columns(w, table)
    stage = f"_stage_{table}"
    if top < mirror_top:  # the newest rows were deleted (a run, a metric group): so are they here
        w.execute(f"DELETE FROM main.{quote_ident(table)} WHERE id > {int(top)}")
        mirror_top = top
    if isinstance(source, SqliteSource):
        low = mirror_top  # one writer, ids in commit order: everything up to the mirror's top is there
        _stage_rows(w, source, table, cols, types, stage, "WHERE id > ? AND id <= ?", (low, top), top - low)
        inserts.add(table, stage)
        return low
    low = min(int(state.get("low", 0)), int(top))  # ids are never given twice on PostgreSQL
    if top > low:  # else every row there is settled and mirrored
        source.stage(w, stage, table, cols, types, where="WHERE id > ?", params=(low,))
        inserts.add(table, stage, key=("id",), new_only=f"(SELECT id FROM main.{quote_ident(table)} WHERE id > {low})")
    else:
        source.stage(w, stage, table, cols, types, where="WHERE 1 = 0")
    pending = state.get("pending")
    if pending and not set(pending[1]) & set(snapshot.in_flight):
        low = max(low, int(pending[0]))  # every transaction in flight then has finished
    if not snapshot.in_flight:
        low = max(low, int(top))
    state.update(low=low, pending=[int(top), snapshot.in_flight])
    return mirror_top


def _stage_rows(w: "duckdb.DuckDBPyConnection", source: SqliteSource, table: str, cols: list[str], types: list[str],
                stage: str, where: str, params: Sequence[Any], expected: int) -> int:
    """SQLite rows into ``stage``: by the scanner for a large first copy, else by the driver."""
    if expected <= SCANNER_FROM_ROWS or params[0]:
        return source.stage(w, stage, table, cols, types, where=where, params=params)
    # The scanner reads in its own (later) snapshot: keep exactly the rows of ours (ids up to top).
    low, top = (int(p) for p in params)
    return source.stage_scanned(w, stage, table, cols, types, where=f"WHERE id > {low} AND id <= {top}")


def _sync_rowid(w: "duckdb.DuckDBPyConnection", source: Source, table: str, key: tuple[str, ...],
                columns: dict[str, list[str]], state: dict[str, Any], snapshot: _Snapshot,
                inserts: "_Inserts") -> None:
    """Stage the rows added since the last sync (texts are inserted by ``_settle_texts``)."""
    cols, types = _stage_columns(w, table)
    stage = f"_stage_{table}"
    if isinstance(source, SqliteSource):
        low = int(w.execute(f"SELECT coalesce(max(_rowid), 0) FROM main.{quote_ident(table)}").fetchone()[0])  # type: ignore[index]
        top = source.rows(f"SELECT max(rowid) FROM {quote_ident(table)}")[0][0] or 0
        if top < low:  # the newest rows were deleted; SQLite gives their rowids to the next ones
            if table == "texts":  # texts gc removed: those still referenced are fetched by sha below
                w.execute(f"UPDATE main.texts SET _rowid = NULL WHERE _rowid > {int(top)}")
            else:
                w.execute(f"DELETE FROM main.{quote_ident(table)} WHERE _rowid > {int(top)}")
            low = top
        n = source.stage(w, stage, table, cols, types, where="WHERE rowid > ?", params=(low,))
    elif "xmin" not in state:
        n = source.stage(w, stage, table, cols, types)
    else:
        select = ", ".join(quote_ident(c) for c in cols if c != "_rowid")
        n = source.stage_query(w, stage, cols, types,
                               f"SELECT {select} FROM {quote_ident(source.schema)}.{quote_ident(table)} "
                               f"WHERE age(xmin) <= age('{int(state['xmin']) % 2**32}'::xid)")
    if n and table != "texts":
        inserts.add(table, stage, new_only=f"main.{quote_ident(table)}", key=key)
    if isinstance(source, PostgresSource):
        state["xmin"] = snapshot.xmin


# -- metric values replaced by eval ------------------------------------------------------------


def _sync_metric_groups(w: "duckdb.DuckDBPyConnection", source: Source, runs: list[int], low: int,
                        columns: dict[str, list[str]], inserts: "_Inserts") -> None:
    """Fetch again each (run, metric, implementation) group whose corpus row differs from the store's."""
    if not runs:
        return
    names = _metric_names(w, source, runs)
    if not names:
        return
    listed = ", ".join("?" * len(names))
    stored = {}
    for chunk in _chunks(runs, 500):
        rows = source.rows(
            f"SELECT id, run_id, metric, implementation, value, details, created_at FROM metric_values "
            f"WHERE run_id IN ({', '.join('?' * len(chunk))}) AND metric IN ({listed}) AND subject = 'corpus'",
            [*chunk, *names])
        stored.update({int(r[0]): _corpus_key(r) for r in rows})
    mirrored = {int(r[0]): _corpus_key(r) for r in w.execute(
        "SELECT id, run_id, metric, implementation, value, CAST(details AS VARCHAR), CAST(created_at AS TIMESTAMP) "
        "FROM main.metric_values WHERE subject = 'corpus'").fetchall()}
    groups = {v[:3] for i, v in stored.items() if mirrored.get(i) != v}
    groups |= {v[:3] for i, v in mirrored.items() if stored.get(i) != v}
    cols, types = _stage_columns(w, "metric_values")
    for run_id, metric, impl in sorted(groups):
        # Rows above the watermark were fetched whole by this sync; the older part is fetched again.
        w.execute("DELETE FROM main.metric_values WHERE run_id = ? AND metric = ? AND implementation = ? AND id <= ?",
                  [run_id, metric, impl, low])
        source.stage(w, "_stage_group", "metric_values", cols, types,
                     where="WHERE run_id = ? AND metric = ? AND implementation = ? AND id <= ?",
                     params=(run_id, metric, impl, low))
        inserts.add("metric_values", "_stage_group", new_only="main.metric_values", key=("id",))
    inserts.report.refetched_groups = len(groups)


def _metric_names(w: "duckdb.DuckDBPyConnection", source: Source, runs: list[int]) -> list[str]:
    """Every metric name with values in the store (SQLite: a loose index scan per run, since a reused id
    can hide new rows from the watermark); on PostgreSQL the mirror's names, which hold every new one."""
    names = {r[0] for r in w.execute("SELECT DISTINCT metric FROM main.metric_values").fetchall()}
    if isinstance(source, SqliteSource):
        for run_id in runs:
            last = ""
            while True:
                row = source.rows("SELECT metric FROM metric_values WHERE run_id = ? AND metric > ? "
                                  "ORDER BY metric LIMIT 1", (run_id, last))
                if not row:
                    break
                last = row[0][0]
                names.add(last)
    return sorted(names)


def _corpus_key(row: Sequence[Any]) -> tuple[Any, ...]:
    details = row[5]
    if isinstance(details, (dict, list)):
        details = json.dumps(details, sort_keys=True)
    elif isinstance(details, str):
        try:
            details = json.dumps(json.loads(details), sort_keys=True)
        except ValueError:
            pass
    return (int(row[1]), row[2], row[3], float(row[4]), details, _as_utc(row[6]))


# -- candidate values by evaluation ------------------------------------------------------------


def _sync_eval_values(w: "duckdb.DuckDBPyConnection", source: Source, state: dict[str, Any],
                      inserts: "_Inserts") -> None:
    """Fetch the values of evaluations new or changed since the last sync; drop those of evaluations gone."""
    rows = source.rows("SELECT id, run_id, bleu_4_implementation, cider_implementation, created_at "
                       "FROM candidate_evals")
    now = {str(r[0]): _jsonable(list(r[1:])) for r in rows}
    known = state.get("evals", {})
    stale = sorted(int(i) for i, row in known.items() if now.get(i) != row)
    fresh = sorted(int(i) for i, row in now.items() if known.get(i) != row)
    if stale:
        w.execute(f"DELETE FROM main.candidate_eval_values WHERE eval_id IN ({', '.join(map(str, stale))})")
    cols, types = _stage_columns(w, "candidate_eval_values")
    for chunk in _chunks(fresh, 500):
        listed = ", ".join(map(str, chunk))
        where = f"WHERE eval_id IN ({listed})"
        if isinstance(source, SqliteSource):
            expected = source.rows(f"SELECT count(*) FROM candidate_eval_values {where}")[0][0]
            if expected > SCANNER_FROM_ROWS:
                # An evaluation's values only change with its row (seen next time): any snapshot will do.
                source.stage_scanned(w, "_stage_eval_values", "candidate_eval_values", cols, types, where=where)
            else:
                source.stage(w, "_stage_eval_values", "candidate_eval_values", cols, types, where=where)
        else:
            source.stage(w, "_stage_eval_values", "candidate_eval_values", cols, types, where=where)
        inserts.add("candidate_eval_values", "_stage_eval_values")
    state["evals"] = now


# -- texts -------------------------------------------------------------------------------------


def _settle_texts(w: "duckdb.DuckDBPyConnection", source: Source, stages: list[str], texts_staged: bool,
                  report: SyncReport) -> None:
    """Insert the staged texts, fetch the texts that staged rows reference but neither holds, and leave
    every text those rows show in the temp table ``_texts_at_hand`` (sha256, text).

    One scan of the mirror's texts (by sha, against those this sync needs) serves every table's
    insert; joined with all the texts, each insert and each check was a scan of them (0.1–0.5 s each
    at 1.8M texts).
    """
    parts = [f"SELECT {quote_ident(TEXT_REFERENCES[stage.removeprefix('_stage_')])} AS sha FROM {stage}"
             for stage in stages]
    if texts_staged:
        parts.append("SELECT sha256 AS sha FROM _stage_texts")
    w.execute("CREATE OR REPLACE TEMP TABLE _wanted_shas AS SELECT DISTINCT sha FROM ("
              + (" UNION ALL ".join(parts) if parts else "SELECT CAST(NULL AS VARCHAR) AS sha") + ") WHERE sha IS NOT NULL")
    wanted = int(w.execute("SELECT count(*) FROM _wanted_shas").fetchone()[0])  # type: ignore[index]
    w.execute("CREATE OR REPLACE TEMP TABLE _texts_at_hand AS SELECT t.sha256, t.text FROM main.texts t "
              "SEMI JOIN _wanted_shas n ON n.sha = t.sha256" + ("" if wanted else " LIMIT 0"))
    if texts_staged:
        _add_texts(w, "_stage_texts", report)
    missing = [r[0] for r in w.execute(
        "SELECT n.sha FROM _wanted_shas n ANTI JOIN _texts_at_hand t ON t.sha256 = n.sha").fetchall()]
    cols, types = _stage_columns(w, "texts")
    for chunk in _chunks(sorted(missing), 20_000):
        if isinstance(source, SqliteSource):
            n = source.stage(w, "_stage_missing", "texts", cols, types,
                             where="WHERE sha256 IN (SELECT value FROM json_each(?))", params=(json.dumps(chunk),))
        else:
            listed = ",".join(chunk)  # hex digests: nothing to quote
            select = ", ".join(quote_ident(c) for c in cols if c != "_rowid")
            n = source.stage_query(w, "_stage_missing", cols, types,
                                   f"SELECT {select} FROM {quote_ident(source.schema)}.texts "
                                   f"WHERE sha256 = ANY('{{{listed}}}'::text[])")
        if n:
            _add_texts(w, "_stage_missing", report)


def _add_texts(w: "duckdb.DuckDBPyConnection", stage: str, report: SyncReport) -> None:
    """The staged texts not at hand (those at hand are the mirror's, for every sha this sync needs) into
    the mirror and at hand."""
    w.execute(f"CREATE OR REPLACE TEMP TABLE _new_texts AS SELECT s.* FROM {stage} s "
              "ANTI JOIN _texts_at_hand m ON m.sha256 = s.sha256")
    report.add("texts", _insert(w, "texts", "_new_texts"))
    w.execute("INSERT INTO _texts_at_hand SELECT sha256, text FROM _new_texts")


def _drop_removed_texts(w: "duckdb.DuckDBPyConnection", source: Source, report: SyncReport) -> None:
    """After runs were deleted (``gc`` may have removed their texts), drop texts the store no longer has."""
    source.stage(w, "_stage_shas", "texts", ["sha256"], ["VARCHAR"])
    w.execute("DELETE FROM main.texts WHERE sha256 NOT IN (SELECT sha256 FROM _stage_shas)")


# -- helpers -----------------------------------------------------------------------------------


class _Inserts:
    """The sync's inserts: at once, except those of rows that show a text (``TEXT_OF``), which wait for
    ``flush`` once ``_settle_texts`` has every text they show at hand."""

    def __init__(self, w: "duckdb.DuckDBPyConnection", report: SyncReport) -> None:
        self.w, self.report = w, report
        self.waiting: list[tuple[str, str, str | None, Sequence[str]]] = []
        self.staged_rows = 0

    def add(self, table: str, stage: str, new_only: str | None = None, key: Sequence[str] = ()) -> None:
        if table not in TEXT_OF:
            self.report.add(table, _insert(self.w, table, stage, new_only, key))
            return
        self.waiting.append((table, stage, new_only, key))
        self.staged_rows += int(self.w.execute(f"SELECT count(*) FROM {stage}").fetchone()[0])  # type: ignore[index]

    @property
    def any(self) -> bool:
        """Whether this sync brought rows so far (inserted, or staged and waiting)."""
        return bool(self.report.rows) or self.staged_rows > 0

    def flush(self) -> None:
        for table, stage, new_only, key in self.waiting:
            self.report.add(table, _insert(self.w, table, stage, new_only, key, texts="_texts_at_hand"))
        self.waiting.clear()


def _insert(w: "duckdb.DuckDBPyConnection", table: str, stage: str, new_only: str | None = None,
            key: Sequence[str] = (), texts: str = "main.texts") -> int:
    """Insert the staged rows (those whose ``key`` is not in ``new_only`` when given) into ``table``, with
    its derived columns (a row's text from ``texts``); returns the rows inserted."""
    cols, _ = _stage_columns(w, table)
    derived = DERIVED.get(table, {})
    names = ", ".join(quote_ident(c) for c in [*cols, *derived])
    values = ", ".join([f"s.{quote_ident(c)}" for c in cols] + [expr for _, expr in derived.values()])
    joins = f" LEFT JOIN {texts} x ON x.sha256 = s.{quote_ident(TEXT_OF[table])}" if table in TEXT_OF else ""
    if table == "candidate_eval_values":  # its candidates were synced before it
        joins += " LEFT JOIN main.candidates k ON k.id = s.candidate_id"
    if new_only:
        on = " AND ".join(f"m.{quote_ident(k)} = s.{quote_ident(k)}" for k in key)
        joins += f" ANTI JOIN {new_only} m ON {on}"
    row = w.execute(f"INSERT INTO main.{quote_ident(table)} ({names}) SELECT {values} FROM {stage} s{joins}").fetchone()
    return int(row[0]) if row else 0


def _stage_columns(w: "duckdb.DuckDBPyConnection", table: str) -> tuple[list[str], list[str]]:
    """The columns read from the store for ``table`` (its own and SQLite's ``_rowid``; not the derived ones)."""
    cols, types = _mirror_columns(w, table)
    keep = [k for k, c in enumerate(cols) if c not in DERIVED.get(table, {})]
    return [cols[k] for k in keep], [types[k] for k in keep]


def _mirror_columns(w: "duckdb.DuckDBPyConnection", table: str) -> tuple[list[str], list[str]]:
    rows = w.execute("SELECT column_name, data_type FROM duckdb_columns() WHERE database_name = current_database() "
                     "AND schema_name = 'main' AND table_name = ? ORDER BY column_index", [table]).fetchall()
    return [r[0] for r in rows], [r[1] for r in rows]


def _as_utc(value: Any) -> Any:
    """A timestamp as an aware UTC datetime (SQLite gives text or naive datetimes, written as UTC)."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return value
    if isinstance(value, datetime):
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)
    return value


def _jsonable(rows: Any) -> Any:
    """A fingerprint as JSON-friendly values (timestamps as UTC ISO text, so equal instants compare equal)."""
    if isinstance(rows, (list, tuple)):
        return [_jsonable(v) for v in rows]
    value = _as_utc(rows)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):  # PostgreSQL's sum of integers
        return int(value) if value == value.to_integral_value() else str(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _chunks(seq: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [seq[i:i + size] for i in range(0, len(seq), size)]
