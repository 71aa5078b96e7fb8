"""score_cache WITHOUT ROWID on SQLite

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06

MILS's generated candidates now cache their scores, not their embeddings: a COCO-5K run writes
about 2.1M ``score_cache`` rows. As a rowid table with its primary key in a second b-tree, each row
took ~317 bytes on SQLite (681 MB a run); WITHOUT ROWID keeps one b-tree ordered by the key. The
rows are copied as they are. PostgreSQL's table is unchanged.
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: Union[str, None] = "0006"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def _rebuild(with_rowid: bool) -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    op.rename_table("score_cache", "score_cache_old")
    op.create_table(
        "score_cache",
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("image_sha", sa.String(length=64), nullable=False),
        sa.Column("text_sha", sa.String(length=64), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["model_id"], ["models.id"], name=op.f("fk_score_cache_model_id_models"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("model_id", "image_sha", "text_sha", name=op.f("pk_score_cache")),
        sqlite_with_rowid=with_rowid,
    )
    op.execute("INSERT INTO score_cache (model_id, image_sha, text_sha, score) "
               "SELECT model_id, image_sha, text_sha, score FROM score_cache_old")
    op.drop_table("score_cache_old")


def upgrade() -> None:
    _rebuild(with_rowid=False)


def downgrade() -> None:
    _rebuild(with_rowid=True)
