"""What an evaluation reads from the store (a run's captions, references, images, candidates) and
the metric values it writes back, with the digests that tell whether stored values are current.

Unchanged detection: every corpus row keeps in ``details`` the digest of what it was computed from
(``inputs``: the (item, caption sha) pairs and each item's reference shas in order; ``digest``: that
plus whatever else the metric depends on, e.g. the scorer and the image shas). A metric whose corpus
row for the current implementation carries the current digest is served from the store; any other
is computed again and its rows replaced.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from sqlalchemy import delete, func, select, update

from capstore.errors import InputError
from capstore.store.content import get_texts, insert_ignore
from capstore.store.engine import Store
from capstore.store.schema import Candidate, Caption, Dataset, Item, MetricValue, Reference, Run, Split


_WRITE_CHUNK = 30_000


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


def candidate_signature(store: Store, run_id: int, items: Sequence[int]) -> str:
    """Count, id sum and largest id of the run's candidates: candidates are only ever added or
    deleted, never changed, so equal signatures mean the same candidates."""
    with store.read() as s:
        n, total, top = s.execute(select(func.count(), func.coalesce(func.sum(Candidate.id), 0),
                                         func.coalesce(func.max(Candidate.id), 0))
                                  .where(Candidate.run_id == run_id)).one()
    return f"{n}:{total}:{top}:{len(items)}"


def load_candidates(store: Store, run_id: int, items: Sequence[int]) -> list[tuple[int, int, str]]:
    """(candidate id, item id, text sha) of the run's candidates of ``items``."""
    wanted = set(items)
    with store.read() as s:
        rows = s.execute(select(Candidate.id, Candidate.item_id, Candidate.text_sha)
                         .where(Candidate.run_id == run_id).order_by(Candidate.id)).all()
    return [(c, i, t) for c, i, t in rows if i in wanted]


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
    """In one transaction: delete the run's rows of each metric's ``replaced`` implementations (in
    ``scopes``), then insert ``rows`` (consumed in chunks: millions of candidate rows never sit in
    memory at once)."""
    with store.write() as s:
        for metric, impls in replaced.items():
            if impls:
                s.execute(delete(MetricValue).where(MetricValue.run_id == run_id, MetricValue.metric == metric,
                                                    MetricValue.implementation.in_(sorted(impls)),
                                                    MetricValue.scope.in_(list(scopes))))
        chunk: list[dict[str, Any]] = []
        for row in rows:
            chunk.append(row)
            if len(chunk) == _WRITE_CHUNK:
                insert_ignore(s, MetricValue, chunk)
                chunk = []
        insert_ignore(s, MetricValue, chunk)


def set_corpus_details(store: Store, run_id: int, metric: str, implementation: str, details: dict[str, Any]) -> None:
    with store.write() as s:
        s.execute(update(MetricValue).where(MetricValue.run_id == run_id, MetricValue.metric == metric,
                                            MetricValue.scope == "corpus", MetricValue.implementation == implementation)
                  .values(details=details))
