"""BLEU and CIDEr-D through the shipped queries, on a DuckDB connection that holds the texts' PTB tokens.

``MetricSession.open`` makes sure every text an evaluation needs has its tokens in the analysis
mirror (``text_tokens.ensure_tokens``: the tokenizer runs only for texts never tokenized), then opens
a connection on which ``caption_metrics`` and ``candidate_metrics`` run ``sql/caption_metrics.sql``
and ``sql/candidate_metrics.sql``: the values ``capstore sql -f caption_metrics --param run=N``
gives are the values ``capstore eval`` stores.

For the captions of a run the connection holds just what the query reads — the run's captions and
their references (as ``captions`` and ``store."references"``, from the rows the evaluation has already
read) and the token tables of the mirror, attached read-only — so no mirror sync is needed. For
candidates it is the mirror itself, synced first (millions of candidates are read where they are).

When the mirror cannot be used (``--analysis off``, or another process keeps it open), every text
the evaluation needs is tokenized into an in-memory table instead (nothing is cached then).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterator, Sequence

from capstore.metrics.java import MetricError
from capstore.metrics.names import BLEU, CIDER
from capstore.store.engine import Store

if TYPE_CHECKING:
    from pathlib import Path

    import duckdb
    import pyarrow as pa

    from capstore.metrics.store_values import RunInputs
    from capstore.metrics.text_tokens import TokenStats

MEMORY_LIMIT = "4GB"  # a shared machine: DuckDB spills to disk beyond this instead of taking 80% of RAM
CANDIDATE_BATCH_ITEMS = 1000  # items per candidate query: bounds memory on runs of millions of candidates


@dataclass
class CaptionScores:
    """Corpus value and per-item values (by item id) of each of BLEU-1..4 and CIDEr-D."""

    corpus: dict[str, float] = field(default_factory=dict)
    per_item: dict[str, dict[int, float]] = field(default_factory=dict)


class MetricSession:
    """A DuckDB connection for one evaluation, with the PTB tokens of its texts."""

    def __init__(self, con: "duckdb.DuckDBPyConnection", stats: "TokenStats", note: str | None = None) -> None:
        self.con = con
        self.stats = stats
        self.note = note

    @classmethod
    def open(cls, store: Store, inputs: "RunInputs", items: Sequence[int], *, candidates: bool = False,
             analysis: str | None = None) -> "MetricSession":
        """Tokens for the captions and references of ``items`` (and the run's candidates), then a connection."""
        from capstore.analysis.mirror import MirrorBusy, mirror_path
        from capstore.metrics.text_tokens import ensure_tokens

        shas = [inputs.caption[i] for i in items] + [sha for i in items for sha in inputs.refs[i]]
        path = mirror_path(store, analysis)
        note = None
        if path is not None:
            try:
                stats = ensure_tokens(store, path, shas, candidates_of=inputs.run_id if candidates else None)
                con = _mirror_connection(store, path) if candidates else _run_connection(inputs, items, path=path)
                return cls(con, stats)
            except MirrorBusy as exc:
                note = f"{exc}; tokenizing without the cache"
        return cls._without_mirror(store, inputs, items, shas, candidates, note)

    @classmethod
    def _without_mirror(cls, store: Store, inputs: "RunInputs", items: Sequence[int], shas: Sequence[str],
                        candidates: bool, note: str | None) -> "MetricSession":
        from capstore.analysis.duckdb_store import open_analysis
        from capstore.metrics.text_tokens import TokenStats, tokenize_texts
        from capstore.store.content import get_texts
        from capstore.store.schema import Candidate

        wanted = set(shas)
        if candidates:
            from sqlalchemy import select

            with store.read() as s:
                wanted |= set(s.scalars(select(Candidate.text_sha).where(Candidate.run_id == inputs.run_id).distinct()))
        with store.read() as s:
            texts = get_texts(s, sorted(wanted))
        tokens = tokenize_texts(texts, {})
        stats = TokenStats(len(texts), len(texts))
        if not candidates:
            return cls(_run_connection(inputs, items, tokens=tokens), stats, note)
        con, _ = open_analysis(store, analysis="off", lock=False, passthrough=False)
        try:
            _limit_memory(con)
            con.register("_tokens", tokens)
            con.execute("CREATE TEMP TABLE session_tokens AS SELECT * FROM _tokens")
            con.unregister("_tokens")
            con.execute("CREATE OR REPLACE VIEW derived.text_tokens AS SELECT * FROM session_tokens")
        except BaseException:
            con.close()
            raise
        return cls(con, stats, note)

    def ptb(self, shas: Sequence[str]) -> dict[str, str]:
        """The PTB-tokenized string of each of ``shas`` (what METEOR, ROUGE-L and SPICE take)."""
        import pyarrow as pa

        self.con.register("_wanted", pa.table({"sha": pa.array(sorted(set(shas)), pa.string())}))
        try:
            return dict(self.con.execute("SELECT t.text_sha, t.ptb FROM text_tokens t JOIN _wanted w ON w.sha = t.text_sha")
                        .fetchall())
        finally:
            self.con.unregister("_wanted")

    def caption_metrics(self, run_id: int, items: Sequence[str]) -> CaptionScores:
        """BLEU-1..4 and CIDEr-D of the run's captions of ``items`` (external ids): ``sql/caption_metrics.sql``."""
        from capstore.analysis.queries import load_query

        table = self.con.execute(load_query("caption_metrics").text,
                                 {"run": run_id, "items": list(items), "df": "subset"}).to_arrow_table()
        out = CaptionScores()
        names = {m: m.lower() for m in (*BLEU, CIDER)}
        for row in table.to_pylist():
            if row["missing_tokens"]:  # ensure_tokens tokenized every text: a text changed under us
                raise MetricError(f"{row['missing_tokens']} evaluated texts have no PTB tokens; run eval again")
            for metric, column in names.items():
                if row["scope"] == "corpus":
                    out.corpus[metric] = float(row[column])
                else:
                    out.per_item.setdefault(metric, {})[int(row["item_id"])] = float(row[column])
        return out

    def candidate_metrics(self, run_id: int, items: Sequence[str],
                          batch: int = CANDIDATE_BATCH_ITEMS) -> Iterator["pa.Table"]:
        """BLEU and CIDEr-D of the run's candidates of ``items``, ``batch`` items per query (document
        frequencies from all the run's evaluated items, as one query over all of them would give)."""
        from capstore.analysis.queries import load_query

        text = load_query("candidate_metrics").text
        for start in range(0, len(items), batch):
            params = {"run": run_id, "items": list(items[start:start + batch]), "df": "run"}
            yield self.con.execute(text, params).to_arrow_table()

    def close(self) -> None:
        self.con.close()


def _mirror_connection(store: Store, path: "Path") -> "duckdb.DuckDBPyConnection":
    from capstore.analysis.duckdb_store import open_analysis
    from capstore.analysis.mirror import MirrorBusy

    con, info = open_analysis(store, analysis=str(path), lock=False, passthrough=False)
    if info.path is None:
        con.close()
        raise MirrorBusy(info.note or f"analysis mirror {path} is busy")
    _limit_memory(con)
    return con


def _run_connection(inputs: "RunInputs", items: Sequence[int], *, path: "Path | None" = None,
                    tokens: "pa.Table | None" = None) -> "duckdb.DuckDBPyConnection":
    """An in-memory DuckDB holding what ``caption_metrics.sql`` reads for this run: its captions and
    references (``captions``, ``store."references"``, ``store.items``, ``store.runs``) and ``text_tokens``
    (the mirror's, attached read-only, or ``tokens``)."""
    import duckdb
    import pyarrow as pa

    from capstore.analysis.mirror import MIRROR_CATALOG, _attach_read_only
    from capstore.metrics.names import TOKENIZER

    con = duckdb.connect(":memory:")
    try:
        for setting in ("autoinstall_known_extensions = false", "autoload_known_extensions = false"):
            con.execute(f"SET {setting}")
        _limit_memory(con)
        refs = [(i, k, sha) for i in items for k, sha in enumerate(inputs.refs[i])]
        tables = {
            "captions": pa.table({"run_id": [inputs.run_id] * len(items), "item_id": list(items),
                                  "item": [inputs.external[i] for i in items],
                                  "text_sha": [inputs.caption[i] for i in items]}),
            "references": pa.table({"item_id": [r[0] for r in refs], "ordinal": [r[1] for r in refs],
                                    "text_sha": [r[2] for r in refs]}),
            "items": pa.table({"id": list(items), "split_id": pa.array([None] * len(items), pa.int64())}),
            "runs": pa.table({"id": [inputs.run_id], "split_id": pa.array([None], pa.int64())}),
        }
        con.execute("CREATE SCHEMA store")
        for name, table in tables.items():
            con.register("_rows", table)
            target = "main.captions" if name == "captions" else f'store."{name}"'
            con.execute(f"CREATE TABLE {target} AS SELECT * FROM _rows")
            con.unregister("_rows")
        if tokens is not None:
            con.register("_rows", tokens)
            con.execute("CREATE TABLE main.session_tokens AS SELECT * FROM _rows")
            con.unregister("_rows")
            source = "main.session_tokens"
        else:
            assert path is not None
            _attach_read_only(con, path)
            source = f"{MIRROR_CATALOG}.main.text_tokens"
        con.execute(f"CREATE VIEW main.text_tokens AS SELECT text_sha, ptb, token_ids FROM {source} "
                    f"WHERE tokenizer = '{TOKENIZER}'")
    except BaseException:
        con.close()
        raise
    return con


def _limit_memory(con: "duckdb.DuckDBPyConnection") -> None:
    import tempfile

    con.execute(f"SET memory_limit = '{MEMORY_LIMIT}'")
    con.execute(f"SET temp_directory = '{tempfile.gettempdir()}/capstore-duckdb-spill'")
