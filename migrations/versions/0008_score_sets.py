"""score sets: a write's scores of one medium in one row, instead of one score_cache row a pair

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07

A COCO-5K MILS run stored ~2.5M ``score_cache`` rows, each a random-key entry (model, medium sha,
text sha) in a b-tree: a fifth to a quarter of the engine's store time in the full-size rehearsal.
``score_sets`` holds one row a medium a write (a MILS step's ~50 scores): the texts' sha256 digests
(32 bytes each) and their scores (little-endian float64) side by side, found by (model, medium).

Existing scores are moved, one set a (model, medium) with all its pairs; downgrade unpacks them
(a pair stored in two sets keeps its first score, as lookups read it).
"""
from itertools import groupby
from typing import Sequence, Union

import numpy as np
import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: Union[str, None] = "0007"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

_MEDIA_PER_READ = 500


def upgrade() -> None:
    op.create_table(
        "score_sets",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("image_sha", sa.String(length=64), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("text_shas", sa.LargeBinary(), nullable=False),
        sa.Column("scores", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(["model_id"], ["models.id"], name=op.f("fk_score_sets_model_id_models"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_score_sets")),
    )
    with op.batch_alter_table("score_sets", schema=None) as batch_op:
        batch_op.create_index("ix_score_sets_model_image", ["model_id", "image_sha"], unique=False)
    conn = op.get_bind()
    media = conn.execute(sa.text("SELECT DISTINCT model_id, image_sha FROM score_cache ORDER BY 1, 2")).all()
    for model_id, part in groupby(media, key=lambda row: row[0]):
        shas = [image for _, image in part]
        for start in range(0, len(shas), _MEDIA_PER_READ):
            chunk = shas[start:start + _MEDIA_PER_READ]
            rows = conn.execute(sa.text(
                "SELECT image_sha, text_sha, score FROM score_cache WHERE model_id = :m AND image_sha IN :shas "
                "ORDER BY image_sha, text_sha").bindparams(sa.bindparam("shas", expanding=True)),
                {"m": model_id, "shas": chunk}).all()
            sets = [{"m": model_id, "i": image, "n": len(pairs), "t": bytes.fromhex("".join(t for _, t, _ in pairs)),
                     "s": np.array([s for _, _, s in pairs], dtype="<f8").tobytes()}
                    for image, pairs in ((image, list(group)) for image, group in groupby(rows, key=lambda r: r[0]))]
            if sets:
                conn.execute(sa.text("INSERT INTO score_sets (model_id, image_sha, size, text_shas, scores) "
                                     "VALUES (:m, :i, :n, :t, :s)"), sets)
    op.drop_table("score_cache")


def downgrade() -> None:
    op.create_table(
        "score_cache",
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("image_sha", sa.String(length=64), nullable=False),
        sa.Column("text_sha", sa.String(length=64), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["model_id"], ["models.id"], name=op.f("fk_score_cache_model_id_models"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("model_id", "image_sha", "text_sha", name=op.f("pk_score_cache")),
        sqlite_with_rowid=False,
    )
    conn = op.get_bind()
    last = 0
    while True:  # oldest set first: ON CONFLICT DO NOTHING keeps a pair's first score
        rows = conn.execute(sa.text("SELECT id, model_id, image_sha, text_shas, scores FROM score_sets "
                                    "WHERE id > :last ORDER BY id LIMIT 500"), {"last": last}).all()
        if not rows:
            break
        pairs = [{"m": model_id, "i": image, "t": bytes(digests[32 * k:32 * k + 32]).hex(), "s": score}
                 for _, model_id, image, digests, scores in rows
                 for k, score in enumerate(np.frombuffer(scores, dtype="<f8").tolist())]
        conn.execute(sa.text("INSERT INTO score_cache (model_id, image_sha, text_sha, score) VALUES (:m, :i, :t, :s) "
                             "ON CONFLICT DO NOTHING"), pairs)
        last = rows[-1][0]
    op.drop_table("score_sets")
