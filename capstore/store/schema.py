"""The store's tables: SQLAlchemy 2 typed models.

This module is the contract between every part of capstore. Change it only together with an
alembic migration in ``migrations/versions`` (the tests compare the two). The concepts are
written down in ``docs/schema.md``.

Content addressing: texts and media (images, videos, audio clips) are keyed by the sha256 hex digest
of their UTF-8 text or their file bytes, so each is stored once however many datasets, runs or caches
mention it.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Optional

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text as LongText,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

SHA = String(64)

# Named constraints: alembic's batch mode (SQLite) can only alter what has a name.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

RUN_STATUSES = ("pending", "running", "done", "failed", "interrupted", "external")
WORK_STATUSES = ("pending", "leased", "done", "failed")
CANDIDATE_ORIGINS = ("pool", "generated", "baseline", "seed")
MODEL_KINDS = ("scorer", "generator", "captioner")
MEDIA_KINDS = ("image", "video", "audio")


def utcnow() -> datetime:
    """Timezone-aware now, stored as UTC."""
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class Dataset(Base):
    """A named collection of items (images, videos or audio clips; e.g. ``coco-karpathy``), split into splits."""

    __tablename__ = "datasets"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    description: Mapped[Optional[str]] = mapped_column(LongText)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Split(Base):
    """A part of a dataset (``test``, ``val``…); runs are made over one split."""

    __tablename__ = "splits"
    __table_args__ = (UniqueConstraint("dataset_id", "name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    source: Mapped[Optional[str]] = mapped_column(LongText)  # the annotation file or folder imported
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Image(Base):
    """One medium (an image, a video or an audio clip), keyed by the sha256 of its bytes: the same
    file in two datasets is one row. (The table kept its name from when capstore held only images.)"""

    __tablename__ = "images"
    # OR terms, not IN (...), as candidates.origin (migration 0005).
    __table_args__ = (CheckConstraint(" OR ".join(f"kind = '{k}'" for k in MEDIA_KINDS), name="kind"),)
    sha256: Mapped[str] = mapped_column(SHA, primary_key=True)
    size_bytes: Mapped[int] = mapped_column(BigInteger)  # 64-bit: videos pass 2 GiB (migration 0005)
    width: Mapped[Optional[int]] = mapped_column(Integer)
    height: Mapped[Optional[int]] = mapped_column(Integer)
    format: Mapped[Optional[str]] = mapped_column(String(20))
    original_name: Mapped[Optional[str]] = mapped_column(LongText)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    kind: Mapped[str] = mapped_column(String(10), default="image", server_default="image")
    duration_seconds: Mapped[Optional[float]] = mapped_column(Float)  # videos and audio clips, when probed


class ImageFile(Base):
    """A place where a medium's bytes were seen (a path); workers read the first that still hashes right."""

    __tablename__ = "image_files"
    __table_args__ = (UniqueConstraint("image_sha", "path"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    image_sha: Mapped[str] = mapped_column(ForeignKey("images.sha256", ondelete="CASCADE"))
    path: Mapped[str] = mapped_column(LongText)


class ImageBlob(Base):
    """An image's bytes kept inside the store (generated demo images, small datasets)."""

    __tablename__ = "image_blobs"
    image_sha: Mapped[str] = mapped_column(ForeignKey("images.sha256", ondelete="CASCADE"), primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class Item(Base):
    """One entry of a split: an external id (e.g. COCO image_id) pointing at a medium (image, video, audio clip)."""

    __tablename__ = "items"
    __table_args__ = (UniqueConstraint("split_id", "external_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    split_id: Mapped[int] = mapped_column(ForeignKey("splits.id", ondelete="CASCADE"), index=True)
    external_id: Mapped[str] = mapped_column(String(200))
    file_name: Mapped[Optional[str]] = mapped_column(LongText)
    # NULL only when imported with --allow-missing-images and the file was absent.
    image_sha: Mapped[Optional[str]] = mapped_column(ForeignKey("images.sha256"), index=True)
    # What the source file says of the item beyond its medium, e.g. nocaps {"domain": "near-domain"}.
    attributes: Mapped[Optional[dict[str, Any]]] = mapped_column(JSON(none_as_null=True))


class Text(Base):
    """Every caption, candidate, reference, pool line and prompt, stored once by sha256."""

    __tablename__ = "texts"
    sha256: Mapped[str] = mapped_column(SHA, primary_key=True)
    text: Mapped[str] = mapped_column(LongText)


class Reference(Base):
    """A reference caption of an item. ``ordinal`` keeps duplicate references of one image apart."""

    __tablename__ = "references"
    __table_args__ = (UniqueConstraint("item_id", "ordinal"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"), index=True)
    ordinal: Mapped[int] = mapped_column(Integer)
    text_sha: Mapped[str] = mapped_column(ForeignKey("texts.sha256"))
    external_id: Mapped[Optional[str]] = mapped_column(String(200))  # the annotation id
    attributes: Mapped[Optional[dict[str, Any]]] = mapped_column(JSON(none_as_null=True))  # VizWiz {"is_precanned": true}


class TextSet(Base):
    """An ordered list of texts kept as a unit: a description pool or a prompt file's lines."""

    __tablename__ = "text_sets"
    sha256: Mapped[str] = mapped_column(SHA, primary_key=True)  # sha of the member shas in order
    kind: Mapped[str] = mapped_column(String(40))  # "pool", ...
    name: Mapped[Optional[str]] = mapped_column(LongText)
    size: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class TextSetMember(Base):
    __tablename__ = "text_set_members"
    set_sha: Mapped[str] = mapped_column(ForeignKey("text_sets.sha256", ondelete="CASCADE"), primary_key=True)
    ordinal: Mapped[int] = mapped_column(Integer, primary_key=True)
    text_sha: Mapped[str] = mapped_column(ForeignKey("texts.sha256"))


class Model(Base):
    """A model as capstore knows it: identified by a fingerprint of its weights and output-changing settings."""

    __tablename__ = "models"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    fingerprint: Mapped[str] = mapped_column(SHA, unique=True)
    kind: Mapped[str] = mapped_column(String(20))
    backend: Mapped[str] = mapped_column(String(40))
    name: Mapped[str] = mapped_column(LongText)  # the name or path it was first loaded by
    weights_sha: Mapped[Optional[str]] = mapped_column(SHA)
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Run(Base):
    """One execution of a method over a split, with its full configuration."""

    __tablename__ = "runs"
    __table_args__ = (CheckConstraint(f"status IN {RUN_STATUSES}", name="status"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    method: Mapped[str] = mapped_column(String(40))
    label: Mapped[Optional[str]] = mapped_column(LongText)
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    config_hash: Mapped[str] = mapped_column(SHA, index=True)
    split_id: Mapped[int] = mapped_column(ForeignKey("splits.id"), index=True)
    status: Mapped[str] = mapped_column(String(20), default="pending")
    parent_run_id: Mapped[Optional[int]] = mapped_column(ForeignKey("runs.id"))
    seed: Mapped[int] = mapped_column(BigInteger, default=0)  # 0 to 2**63-1 (migration 0004)
    capstore_version: Mapped[Optional[str]] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[Optional[datetime]] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[Optional[datetime]] = mapped_column(DateTime(timezone=True))


class WorkItem(Base):
    """The unit of claimed work: one item of one run, leased by one worker at a time."""

    __tablename__ = "work_items"
    __table_args__ = (
        UniqueConstraint("run_id", "item_id"),
        CheckConstraint(f"status IN {WORK_STATUSES}", name="status"),
        Index("ix_work_items_run_status", "run_id", "status"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id"))
    status: Mapped[str] = mapped_column(String(20), default="pending")
    lease_owner: Mapped[Optional[str]] = mapped_column(String(200))
    lease_expires_at: Mapped[Optional[datetime]] = mapped_column(DateTime(timezone=True))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    iterations_done: Mapped[int] = mapped_column(Integer, default=-1)  # -1: nothing committed yet
    stopped_early_at: Mapped[Optional[int]] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)


class Candidate(Base):
    """A caption candidate of an item at an iteration, with its scorer score.

    ``rank`` is its rank by score among the candidates of the same (run, item, iteration), 1 = best.
    Iteration 0 of MILS holds only the kept top of the pool (the full pool's scores derive from
    the embedding cache).
    """

    __tablename__ = "candidates"
    __table_args__ = (
        UniqueConstraint("run_id", "item_id", "iteration", "text_sha"),
        # OR terms, not IN (...): SQLite checks a literal IN-list through a temporary table per
        # statement, which slowed bulk candidate writes ~1.7x (migration 0003).
        CheckConstraint(" OR ".join(f"origin = '{o}'" for o in CANDIDATE_ORIGINS), name="origin"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id"))
    iteration: Mapped[int] = mapped_column(Integer)
    text_sha: Mapped[str] = mapped_column(ForeignKey("texts.sha256"))
    origin: Mapped[str] = mapped_column(String(20))
    score: Mapped[Optional[float]] = mapped_column(Float)
    rank: Mapped[Optional[int]] = mapped_column(Integer)


class IterationState(Base):
    """What an (item, iteration) ended with: the kept set (text shas, best first) and its best."""

    __tablename__ = "iteration_states"
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id"), primary_key=True)
    iteration: Mapped[int] = mapped_column(Integer, primary_key=True)
    best_text_sha: Mapped[Optional[str]] = mapped_column(ForeignKey("texts.sha256"))
    best_score: Mapped[Optional[float]] = mapped_column(Float)
    mean_kept_score: Mapped[Optional[float]] = mapped_column(Float)
    n_new: Mapped[int] = mapped_column(Integer, default=0)
    kept: Mapped[list[Any]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Caption(Base):
    """The final caption of an item in a run (one per item: a constraint, not a hope)."""

    __tablename__ = "captions"
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id"), primary_key=True)
    text_sha: Mapped[str] = mapped_column(ForeignKey("texts.sha256"))
    score: Mapped[Optional[float]] = mapped_column(Float)
    iteration: Mapped[Optional[int]] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class EmbeddingCache(Base):
    """A model's embedding of an image or a text (float32 bytes), computed once."""

    __tablename__ = "embedding_cache"
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), primary_key=True)
    content_kind: Mapped[str] = mapped_column(String(10), primary_key=True)  # "image" | "text"
    content_sha: Mapped[str] = mapped_column(SHA, primary_key=True)
    dim: Mapped[int] = mapped_column(Integer)
    vector: Mapped[bytes] = mapped_column(LargeBinary)


class ScoreSet(Base):
    """A scorer's scores of texts against one medium, written together (migration 0008).

    MILS's generated candidates, each scored against one medium only, cache their scores here
    instead of their embeddings. A row holds one write's scores for one medium (a MILS step's ~50):
    ``text_shas`` the texts' sha256 digests (32 bytes each, in order), ``scores`` their scores
    (little-endian float64, the same order). One row a pair cost a full run 2.5M random-key index
    entries, a quarter of the engine's store time. A pair stored twice reads back as its first write.
    """

    __tablename__ = "score_sets"
    __table_args__ = (Index("ix_score_sets_model_image", "model_id", "image_sha"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    image_sha: Mapped[str] = mapped_column(SHA)  # the medium's sha256: an image, a video or an audio clip
    size: Mapped[int] = mapped_column(Integer)
    text_shas: Mapped[bytes] = mapped_column(LargeBinary)
    scores: Mapped[bytes] = mapped_column(LargeBinary)


class GenerationCache(Base):
    """A generator's or captioner's output for an exact request; errors are never cached.

    ``key`` = sha256 of the canonical JSON of ``parts`` (model fingerprint, prompt sha, image sha,
    sampling parameters, seed, implementation version); see ``capstore.cache.keys``.
    """

    __tablename__ = "generation_cache"
    key: Mapped[str] = mapped_column(SHA, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), index=True)
    prompt_sha: Mapped[Optional[str]] = mapped_column(SHA)
    image_sha: Mapped[Optional[str]] = mapped_column(SHA)
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    seed: Mapped[Optional[int]] = mapped_column(Integer)
    raw_output: Mapped[str] = mapped_column(LongText)
    parsed: Mapped[Optional[list[Any]]] = mapped_column(JSON)
    tokens_in: Mapped[Optional[int]] = mapped_column(Integer)
    tokens_out: Mapped[Optional[int]] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class UsageEvent(Base):
    """One backend call's cost: device-seconds, wall seconds, tokens, images, items."""

    __tablename__ = "usage_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[Optional[int]] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    stage: Mapped[str] = mapped_column(String(40))  # encode_text, encode_image, generate, caption, eval…
    model_id: Mapped[Optional[int]] = mapped_column(ForeignKey("models.id"))
    device_type: Mapped[str] = mapped_column(String(20))  # cpu | cuda | api
    device_name: Mapped[Optional[str]] = mapped_column(String(200))
    device_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    wall_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    tokens_in: Mapped[int] = mapped_column(Integer, default=0)
    tokens_out: Mapped[int] = mapped_column(Integer, default=0)
    images: Mapped[int] = mapped_column(Integer, default=0)
    items: Mapped[int] = mapped_column(Integer, default=0)
    calls: Mapped[int] = mapped_column(Integer, default=1)  # model calls made (0: all from cache)
    cached: Mapped[int] = mapped_column(Integer, default=0)  # requests served from a cache
    worker: Mapped[Optional[str]] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ErrorEvent(Base):
    """A failed attempt: which run, item and stage, what kind of failure, the one-line message."""

    __tablename__ = "errors"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[Optional[int]] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    item_id: Mapped[Optional[int]] = mapped_column(ForeignKey("items.id"))
    stage: Mapped[str] = mapped_column(String(40))
    kind: Mapped[str] = mapped_column(String(60))  # corrupt_image, unparsable_output, http_429, timeout…
    message: Mapped[str] = mapped_column(LongText)
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class MetricValue(Base):
    """A metric's value for a run: corpus-wide, per item, or per candidate.

    ``subject`` is ``corpus``, ``item:<item id>`` or ``candidate:<candidate id>``; it makes a value
    unique per (run, metric, implementation) where nullable columns could not. BLEU-4 and CIDEr-D of
    candidates (millions of values a run) live in ``candidate_eval_values`` instead (migration 0006);
    candidate scope here is for any other metric.
    """

    __tablename__ = "metric_values"
    __table_args__ = (
        UniqueConstraint("run_id", "metric", "subject", "implementation"),
        CheckConstraint("scope IN ('corpus', 'item', 'candidate')", name="scope"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    metric: Mapped[str] = mapped_column(String(40))
    scope: Mapped[str] = mapped_column(String(20))
    subject: Mapped[str] = mapped_column(String(80))
    item_id: Mapped[Optional[int]] = mapped_column(ForeignKey("items.id"))
    candidate_id: Mapped[Optional[int]] = mapped_column(ForeignKey("candidates.id", ondelete="CASCADE"))
    value: Mapped[float] = mapped_column(Float)
    implementation: Mapped[str] = mapped_column(String(200))  # e.g. pycocoevalcap-1.2/cider-d
    details: Mapped[Optional[dict[str, Any]]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


# The candidate metrics ``capstore eval --candidates`` computes, and their columns in ``candidate_eval_values``.
CANDIDATE_METRIC_COLUMNS = {"Bleu_4": "bleu_4", "CIDEr": "cider"}


class CandidateEval(Base):
    """One evaluation of a run's candidates: which implementation computed each metric column of its
    ``candidate_eval_values`` (NULL: that column holds no values). Replaced whole by ``capstore eval``;
    ids are never reused (AUTOINCREMENT on SQLite), so a new evaluation is a new id."""

    __tablename__ = "candidate_evals"
    __table_args__ = {"sqlite_autoincrement": True}
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    bleu_4_implementation: Mapped[Optional[str]] = mapped_column(String(200))
    cider_implementation: Mapped[Optional[str]] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class CandidateEvalValue(Base):
    """A candidate's BLEU-4 and CIDEr-D in one evaluation: typed metric columns, keyed by (evaluation,
    candidate), a WITHOUT ROWID table on SQLite — about 16 bytes a value, where a ``metric_values``
    row took ~240 with its text keys and indexes (migration 0006; benchmarks/big_store.py).

    No foreign key to ``candidates``: SQLite would look up this table for every deleted candidate,
    and an index on ``candidate_id`` alone would double its size. The values go with their evaluation
    (``ON DELETE CASCADE``), which goes with its run, as the run's candidates do.
    """

    __tablename__ = "candidate_eval_values"
    __table_args__ = {"sqlite_with_rowid": False}
    eval_id: Mapped[int] = mapped_column(ForeignKey("candidate_evals.id", ondelete="CASCADE"), primary_key=True)
    candidate_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    bleu_4: Mapped[Optional[float]] = mapped_column(Float)
    cider: Mapped[Optional[float]] = mapped_column(Float)


class Price(Base):
    """A rate that turns usage into dollars: per device-hour (by device name) or per 1M tokens (by model)."""

    __tablename__ = "prices"
    __table_args__ = (UniqueConstraint("kind", "key"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(40))  # device_hour | tokens_in_1m | tokens_out_1m | image
    key: Mapped[str] = mapped_column(String(200))  # device name or model name, '*' for any
    usd: Mapped[float] = mapped_column(Float)
    source: Mapped[Optional[str]] = mapped_column(LongText)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)

