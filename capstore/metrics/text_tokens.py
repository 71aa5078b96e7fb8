"""PTB tokens of texts, kept once per distinct text in the analysis mirror: the Java tokenizer runs
once per text ever (until the mirror is deleted: it is a cache, and tokenizing again gives the same
tokens).

Two tables in the mirror file (``capstore.analysis.mirror``), kept when the mirror is rebuilt for
a new schema revision:

- ``text_tokens(text_sha, tokenizer, ptb, token_ids)``: ``ptb`` is pycocoevalcap's tokenized
  string (what METEOR, ROUGE-L and SPICE take); ``token_ids`` the ids in ``token_words`` of its
  words as ``str.split()`` gives them (what pycocoevalcap's BLEU and CIDEr-D count n-grams of),
  1-based and below 2**21, so that an n-gram of up to 4 words is one integer key in
  ``sql/caption_metrics.sql`` and ``sql/candidate_metrics.sql``;
- ``token_words(word, id)``: the vocabulary. Ids are local to one mirror; the values computed from
  them do not depend on them.

``tokenizer`` names the tokenizer (``names.TOKENIZER``); rows of another tokenizer are ignored by
the ``text_tokens`` view. A later schema migration can move both tables into the store unchanged.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence

from capstore.metrics.java import MetricError, ptb_tokenize
from capstore.metrics.names import TOKENIZER
from capstore.store.engine import Store

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa

MAX_WORD_ID = 2**21 - 1
TOKEN_COLUMNS = ("text_sha", "tokenizer", "ptb", "token_ids")
TOKEN_TABLES = (
    "CREATE TABLE IF NOT EXISTS main.text_tokens (text_sha VARCHAR, tokenizer VARCHAR, ptb VARCHAR, "
    "token_ids INTEGER[])",
    "CREATE TABLE IF NOT EXISTS main.token_words (word VARCHAR, id INTEGER)",
)


@dataclass
class TokenStats:
    """Texts asked for, tokenized now (the others were cached), and the seconds the tokenizer took."""

    texts: int
    tokenized: int
    seconds: float = 0.0


def create_token_tables(w: "duckdb.DuckDBPyConnection") -> None:
    """The token tables, made anew when a file holds them in another layout (they are a cache)."""
    columns = tuple(r[0] for r in w.execute(
        "SELECT column_name FROM duckdb_columns() WHERE database_name = current_database() AND schema_name = 'main' "
        "AND table_name = 'text_tokens' ORDER BY column_index").fetchall())
    if columns and columns != TOKEN_COLUMNS:
        w.execute("DROP TABLE main.text_tokens")
        w.execute("DROP TABLE IF EXISTS main.token_words")
    for ddl in TOKEN_TABLES:
        w.execute(ddl)


def tokens_rows(shas: Sequence[str], ptb: Sequence[str], vocabulary: dict[str, int]) -> "pa.Table":
    """Rows of ``text_tokens`` for tokenized texts; new words get the next ids in ``vocabulary`` (updated)."""
    import pyarrow as pa

    words = [p.split() for p in ptb]
    for ws in words:
        for word in ws:
            if word not in vocabulary:
                vocabulary[word] = len(vocabulary) + 1
    if len(vocabulary) > MAX_WORD_ID:
        raise MetricError(f"more than {MAX_WORD_ID:,} distinct words to tokenize: n-gram keys would overflow")
    return pa.table({"text_sha": pa.array(list(shas), pa.string()),
                     "tokenizer": pa.array([TOKENIZER] * len(shas), pa.string()),
                     "ptb": pa.array(list(ptb), pa.string()),
                     "token_ids": pa.array([[vocabulary[w] for w in ws] for ws in words], pa.list_(pa.int32()))})


def tokenize_texts(texts: dict[str, str], vocabulary: dict[str, int]) -> "pa.Table":
    """Tokenize ``texts`` (sha -> text) in one JVM call; ``text_tokens`` rows."""
    shas = sorted(texts)
    return tokens_rows(shas, ptb_tokenize([texts[s] for s in shas]), vocabulary)


def ensure_tokens(store: Store, path: Path, shas: Iterable[str], *, candidates_of: int | None = None) -> TokenStats:
    """Tokenize the texts of ``shas`` (and of run ``candidates_of``'s candidates) that the mirror at
    ``path`` holds no tokens for, and keep them there.

    Only the token tables are read (the texts to tokenize come from the store), so no sync is needed,
    except to list a run's candidates. The tokenizer runs outside the mirror's lock; the rows are
    written under it (a concurrent eval that tokenized the same texts adds nothing). Raises
    MirrorBusy when the mirror cannot be written now.
    """
    import duckdb

    from capstore.analysis.mirror import (MIRROR_CATALOG, SYNC_LOCK_WAIT_S, _attach_read_only, _connect_writer, _locked,
                                          sync_mirror)
    from capstore.store.content import get_texts

    wanted = sorted(set(shas))
    if candidates_of is not None:
        sync_mirror(store, path)
    if not path.exists():  # the token tables alone: the first query builds the rest of the mirror
        path.parent.mkdir(parents=True, exist_ok=True)
        with _locked(path, exclusive=True, wait_s=SYNC_LOCK_WAIT_S):
            w = _connect_writer(path)
            try:
                create_token_tables(w)
            finally:
                w.close()
    con = duckdb.connect(":memory:")
    try:
        _attach_read_only(con, path)
        _register_shas(con, wanted)
        if candidates_of is not None:
            con.execute(f"INSERT INTO wanted SELECT DISTINCT text_sha FROM {MIRROR_CATALOG}.main.candidates "
                        "WHERE run_id = ? EXCEPT SELECT sha FROM wanted", [candidates_of])
        count = con.execute("SELECT count(*) FROM wanted").fetchone()[0]  # type: ignore[index]
        missing = [r[0] for r in con.execute(
            f"SELECT sha FROM wanted WHERE sha NOT IN (SELECT text_sha FROM {MIRROR_CATALOG}.main.text_tokens "
            "WHERE tokenizer = ?)", [TOKENIZER]).fetchall()]
    finally:
        con.close()
    stats = TokenStats(texts=int(count), tokenized=len(missing))
    if not missing:
        return stats
    with store.read() as s:
        texts = get_texts(s, missing)
    started = time.perf_counter()
    shas_in_order = sorted(texts)
    ptb = ptb_tokenize([texts[sha] for sha in shas_in_order])
    stats.seconds = time.perf_counter() - started
    with _locked(path, exclusive=True, wait_s=SYNC_LOCK_WAIT_S):
        w = _connect_writer(path)
        try:
            create_token_tables(w)
            w.execute("BEGIN TRANSACTION")
            vocabulary = dict(w.execute("SELECT word, id FROM main.token_words").fetchall())
            known = len(vocabulary)
            rows = tokens_rows(shas_in_order, ptb, vocabulary)
            new_words = sorted(((word, i) for word, i in vocabulary.items() if i > known), key=lambda p: p[1])
            if new_words:
                import pyarrow as pa

                w.register("_new_words", pa.table({"word": [p[0] for p in new_words],
                                                   "id": pa.array([p[1] for p in new_words], pa.int32())}))
                w.execute("INSERT INTO main.token_words SELECT * FROM _new_words")
                w.unregister("_new_words")
            w.register("_new_tokens", rows)
            w.execute("INSERT INTO main.text_tokens SELECT n.* FROM _new_tokens n ANTI JOIN "
                      "(SELECT text_sha FROM main.text_tokens WHERE tokenizer = ?) t ON t.text_sha = n.text_sha",
                      [TOKENIZER])
            w.unregister("_new_tokens")
            w.execute("COMMIT")
            w.execute("CHECKPOINT")
        finally:
            w.close()
    return stats


def _register_shas(con: "duckdb.DuckDBPyConnection", shas: list[str]) -> None:
    import pyarrow as pa

    con.register("_wanted", pa.table({"sha": pa.array(shas, pa.string())}))
    con.execute("CREATE TEMP TABLE wanted AS SELECT sha FROM _wanted")
    con.unregister("_wanted")
