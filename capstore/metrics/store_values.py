"""What an evaluation reads from the store (a run's captions, references, images, candidates) and
the metric values it writes back, with the digests that tell whether stored values are current.

Corpus and item values are ``metric_values`` rows; BLEU-4 and CIDEr-D of candidates are typed
columns of ``candidate_eval_values``, one ``candidate_evals`` row per evaluation naming each
column's implementation (millions of values a run: ~16 bytes each instead of a text-keyed row).

Unchanged detection: every corpus row keeps in ``details`` the digest of what it was computed from
(``inputs``: the (item, caption sha) pairs and each item's reference shas in order; ``digest``: that
plus whatever else the metric depends on, e.g. the scorer and the image shas). A metric whose corpus
row for the current implementation carries the current digest is served from the store; any other
is computed again and its rows replaced.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from sqlalchemy import delete, func, select, update

from capstore.errors import InputError
from capstore.store.content import get_texts
from capstore.store.engine import Store
from capstore.store.ids import check_run_id
from capstore.store.schema import (CANDIDATE_METRIC_COLUMNS, Candidate, CandidateEval, CandidateEvalValue, Caption,
                                   Dataset, Item, MetricValue, Reference, Run, Split, utcnow)

if TYPE_CHECKING:
    import pyarrow as pa


_WRITE_CHUNK = 100_000
_BULK_CHUNK = 500_000


def _sha(*parts: str) -> str:
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def item_order(external_id: str) -> tuple[int, int, str]:
    """Numeric external ids in numeric order, then the others by text."""
    return (0, int(external_id), external_id) if external_id.isascii() and external_id.isdigit() else (1, 0, external_id)


@dataclass
class RunInputs:
    """A run's evaluated set: its captioned items (by external id) with caption, references and image."""

    run_id: int
    name: str  # "method on dataset/split"
    items: list[int]
    external: dict[int, str]
    caption: dict[int, str]  # item -> caption text sha
    refs: dict[int, list[str]]  # item -> reference text shas by ordinal (may be empty)
    image: dict[int, str | None]
    texts: dict[str, str] = field(default_factory=dict)  # sha -> text, filled by load_texts

    @property
    def with_refs(self) -> list[int]:
        return [i for i in self.items if self.refs.get(i)]

    def digest(self) -> str:
        """The (item, caption sha, reference shas) of the evaluated set."""
        return _sha(*(f"{i}:{self.caption[i]}:{','.join(self.refs.get(i, []))}" for i in self.items))

    def image_digest(self) -> str:
        return _sha(*(f"{i}:{self.image[i] or '-'}" for i in self.items))


def load_inputs(store: Store, run_id: int) -> RunInputs:
    """The run's captions, references and image shas; InputError for an unknown or caption-less run."""
    check_run_id(run_id)
    with store.read() as s:
        row = s.execute(select(Run.method, Dataset.name, Split.name).join(Split, Split.id == Run.split_id)
                        .join(Dataset, Dataset.id == Split.dataset_id).where(Run.id == run_id)).first()
        if row is None:
            raise InputError(f"no run {run_id} in this store (see `capstore runs list`)")
        caps = s.execute(select(Caption.item_id, Caption.text_sha, Item.external_id, Item.image_sha)
                         .join(Item, Item.id == Caption.item_id).where(Caption.run_id == run_id)).all()
        refs = s.execute(select(Reference.item_id, Reference.text_sha)
                         .join(Caption, (Caption.item_id == Reference.item_id) & (Caption.run_id == run_id))
                         .order_by(Reference.item_id, Reference.ordinal)).all()
    if not caps:
        raise InputError(f"run {run_id} has no captions yet: nothing to evaluate (see `capstore status {run_id}`)")
    external = {i: e for i, _, e, _ in caps}
    by_item: dict[int, list[str]] = {}
    for item, sha in refs:
        by_item.setdefault(item, []).append(sha)
    return RunInputs(run_id=run_id, name=f"{row[0]} on {row[1]}/{row[2]}",
                     items=sorted(external, key=lambda i: item_order(external[i])), external=external,
                     caption={i: t for i, t, _, _ in caps}, refs=by_item, image={i: im for i, _, _, im in caps})


def load_texts(store: Store, inputs: RunInputs, shas: Iterable[str] | None = None) -> dict[str, str]:
    """Texts of the captions and references (or of ``shas``), kept on ``inputs``."""
    wanted = list(shas) if shas is not None else [
        *inputs.caption.values(), *(sha for item in inputs.items for sha in inputs.refs.get(item, []))]
    missing = [s for s in dict.fromkeys(wanted) if s not in inputs.texts]
    if missing:
        with store.read() as s:
            inputs.texts.update(get_texts(s, missing))
    return inputs.texts


@dataclass
class StoredCorpus:
    metric: str
    implementation: str
    value: float
    details: dict[str, Any]


def stored_corpus(store: Store, run_id: int, metrics: Sequence[str]) -> list[StoredCorpus]:
    """The run's corpus-scope rows of ``metrics`` (every implementation)."""
    with store.read() as s:
        rows = s.execute(select(MetricValue.metric, MetricValue.implementation, MetricValue.value, MetricValue.details)
                         .where(MetricValue.run_id == run_id, MetricValue.scope == "corpus",
                                MetricValue.metric.in_(list(metrics)))).all()
    return [StoredCorpus(m, impl, float(v), dict(d or {})) for m, impl, v, d in rows]


def candidate_signature(store: Store, run_id: int, items: Sequence[int], analysis: str | None = None) -> str:
    """Count, id sum and largest id of the run's candidates: candidates are only ever added or
    deleted, never changed, so equal signatures mean the same candidates. Read from the analysis
    mirror (synced first: milliseconds for millions of candidates), else from the store."""
    from capstore.analysis.mirror import MIRROR_CATALOG, MirrorBusy, _attach_read_only, mirror_path, sync_mirror

    path = mirror_path(store, analysis)
    row = None
    if path is not None:
        import duckdb

        try:
            sync_mirror(store, path)
            con = duckdb.connect(":memory:")
            try:
                _attach_read_only(con, path)
                row = con.execute(f"SELECT count(*), coalesce(sum(id), 0), coalesce(max(id), 0) "
                                  f"FROM {MIRROR_CATALOG}.main.candidates WHERE run_id = ?", [run_id]).fetchone()
            finally:
                con.close()
        except (MirrorBusy, duckdb.Error):
            row = None
    if row is None:
        with store.read() as s:
            row = s.execute(select(func.count(), func.coalesce(func.sum(Candidate.id), 0),
                                   func.coalesce(func.max(Candidate.id), 0)).where(Candidate.run_id == run_id)).one()
    n, total, top = row
    return f"{int(n)}:{int(total)}:{int(top)}:{len(items)}"


def value_row(run_id: int, metric: str, implementation: str, value: float, *, item_id: int | None = None,
              candidate_id: int | None = None, details: dict[str, Any] | None = None) -> dict[str, Any]:
    """A ``metric_values`` row: corpus scope, or item / candidate scope with its subject."""
    if candidate_id is not None:
        scope, subject = "candidate", f"candidate:{candidate_id}"
    elif item_id is not None:
        scope, subject = "item", f"item:{item_id}"
    else:
        scope, subject = "corpus", "corpus"
    return {"run_id": run_id, "metric": metric, "scope": scope, "subject": subject, "item_id": item_id,
            "candidate_id": candidate_id, "value": float(value), "implementation": implementation, "details": details}


def replace_values(store: Store, run_id: int, replaced: dict[str, set[str]], rows: Iterable[dict[str, Any]],
                   scopes: Sequence[str] = ("corpus", "item", "candidate")) -> None:
    """In one transaction: delete the run's values of each metric's ``replaced`` implementations (in
    ``scopes``; candidate scope includes the metric's column of ``candidate_eval_values``), then insert
    ``rows`` (in chunks, through the bulk writer: millions of rows never sit in memory at once; every
    row is new, its group was just deleted)."""
    from capstore.store.bulk import insert_rows

    with store.write(bulk=True) as s:
        for metric, impls in replaced.items():
            if impls:
                s.execute(delete(MetricValue).where(MetricValue.run_id == run_id, MetricValue.metric == metric,
                                                    MetricValue.implementation.in_(sorted(impls)),
                                                    MetricValue.scope.in_(list(scopes))))
        if "candidate" in scopes:
            _drop_candidate_columns(s, run_id, replaced)
        now = utcnow()
        chunk: list[tuple[Any, ...]] = []
        for row in rows:
            chunk.append(tuple(row.get(c) if c != "created_at" else now for c in VALUE_COLUMNS))
            if len(chunk) == _WRITE_CHUNK:
                insert_rows(s, MetricValue.__table__, VALUE_COLUMNS, chunk)
                chunk = []
        insert_rows(s, MetricValue.__table__, VALUE_COLUMNS, chunk)


VALUE_COLUMNS = ("run_id", "metric", "scope", "subject", "item_id", "candidate_id", "value", "implementation",
                 "details", "created_at")
EVAL_VALUE_COLUMNS = ("eval_id", "candidate_id", "bleu_4", "cider")


def _drop_candidate_columns(s: Any, run_id: int, dropped: dict[str, set[str]]) -> None:
    """Remove the run's candidate values of each metric's ``dropped`` implementations: an evaluation left
    with no metric is deleted with its values; one that keeps another metric has the dropped columns
    emptied (rare: the two are computed and replaced together)."""
    dropped = {m: i for m, i in dropped.items() if i and m in CANDIDATE_METRIC_COLUMNS}
    if not dropped:
        return
    impl_cols = {m: getattr(CandidateEval, f"{c}_implementation") for m, c in CANDIDATE_METRIC_COLUMNS.items()}
    evals = s.execute(select(CandidateEval.id, *impl_cols.values()).where(CandidateEval.run_id == run_id)).all()
    for eval_id, *impls in evals:
        now = dict(zip(impl_cols, impls))
        gone = [m for m, i in now.items() if i is not None and i in dropped.get(m, ())]
        if not gone:
            continue
        if all(now[m] is None for m in now if m not in gone):
            # Values first: a bulk transaction on SQLite runs without foreign keys, so without cascades.
            s.execute(delete(CandidateEvalValue).where(CandidateEvalValue.eval_id == eval_id))
            s.execute(delete(CandidateEval).where(CandidateEval.id == eval_id))
        else:
            s.execute(update(CandidateEvalValue).where(CandidateEvalValue.eval_id == eval_id)
                      .values({CANDIDATE_METRIC_COLUMNS[m]: None for m in gone}))
            s.execute(update(CandidateEval).where(CandidateEval.id == eval_id)
                      .values({impl_cols[m].key: None for m in gone}))


def replace_candidate_values(store: Store, run_id: int, implementations: dict[str, str],
                             table: "pa.Table | None") -> tuple[int, int]:
    """In one bulk transaction: remove the run's candidate values of each metric's implementation, then
    write the values of ``table`` (``sql/candidate_metrics.sql``'s rows: ``candidate_id``, ``item_id``,
    ``text_sha``, ``bleu_4``, ``cider``; candidates without values are left out) as a new evaluation.
    Returns (candidates with values, distinct (item, text) pairs among them)."""
    from capstore.store.bulk import insert_rows

    with store.write(bulk=True) as s:
        _drop_candidate_columns(s, run_id, {m: {i} for m, i in implementations.items()})
        if table is None or not table.num_rows:
            return 0, 0
        import pyarrow.compute as pc

        valid = table.filter(pc.and_(pc.is_valid(table["bleu_4"]), pc.is_valid(table["cider"])))
        impl_of = {f"{CANDIDATE_METRIC_COLUMNS[m]}_implementation": i for m, i in implementations.items()}
        evaluation = CandidateEval(run_id=run_id, created_at=utcnow(), **impl_of)
        s.add(evaluation)
        s.flush()
        ids = valid["candidate_id"].to_pylist()
        columns = {c: valid[c].to_pylist() if m in implementations else [None] * len(ids)
                   for m, c in CANDIDATE_METRIC_COLUMNS.items()}
        for start in range(0, len(ids), _BULK_CHUNK):
            end = start + _BULK_CHUNK
            insert_rows(s, CandidateEvalValue.__table__, EVAL_VALUE_COLUMNS,
                        list(zip([evaluation.id] * (end - start), ids[start:end],
                                 *(columns[c][start:end] for c in CANDIDATE_METRIC_COLUMNS.values()))))
        distinct = valid.group_by(["item_id", "text_sha"]).aggregate([]).num_rows
    return valid.num_rows, distinct


def set_corpus_details(store: Store, run_id: int, metric: str, implementation: str, details: dict[str, Any]) -> None:
    with store.write() as s:
        s.execute(update(MetricValue).where(MetricValue.run_id == run_id, MetricValue.metric == metric,
                                            MetricValue.scope == "corpus", MetricValue.implementation == implementation)
                  .values(details=details))


def stored_candidate_values(store: Store, run_id: int) -> dict[tuple[str, int], tuple[float, str]]:
    """The run's candidate values: (metric, candidate id) -> (value, implementation), of every evaluation."""
    columns = {m: (getattr(CandidateEvalValue, c), getattr(CandidateEval, f"{c}_implementation"))
               for m, c in CANDIDATE_METRIC_COLUMNS.items()}
    out: dict[tuple[str, int], tuple[float, str]] = {}
    with store.read() as s:
        for metric, (value, impl) in columns.items():
            rows = s.execute(select(CandidateEvalValue.candidate_id, value, impl)
                             .join(CandidateEval, CandidateEval.id == CandidateEvalValue.eval_id)
                             .where(CandidateEval.run_id == run_id, value.is_not(None), impl.is_not(None))
                             .order_by(CandidateEval.id)).all()
            out.update({(metric, int(c)): (float(v), str(i)) for c, v, i in rows})
    return out
