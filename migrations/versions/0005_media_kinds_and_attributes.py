"""media kinds (video, audio) beside images, and item and reference attributes

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01

``images`` holds every medium: ``kind`` (image | video | audio, a CHECK written as OR terms like
``candidates.origin``), ``duration_seconds`` of a video or clip, and ``size_bytes`` as a 64-bit
integer (a video passes 2 GiB; PostgreSQL's INTEGER stops there). On SQLite ``images`` is rebuilt (a
batch copy; env.py keeps foreign keys off around it and checks them before committing). ``items``
and ``references`` get a JSON ``attributes`` column (nocaps' ``domain``, VizWiz's
``is_precanned``…), added in place on both engines.
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: Union[str, None] = "0004"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

KINDS = ("image", "video", "audio")


def upgrade() -> None:
    with op.batch_alter_table("images") as batch:
        batch.add_column(sa.Column("kind", sa.String(10), nullable=False, server_default="image"))
        batch.add_column(sa.Column("duration_seconds", sa.Float(), nullable=True))
        batch.alter_column("size_bytes", type_=sa.BigInteger(), existing_type=sa.Integer(), existing_nullable=False)
        batch.create_check_constraint(op.f("ck_images_kind"), " OR ".join(f"kind = '{k}'" for k in KINDS))
    for table in ("items", "references"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("attributes", sa.JSON(), nullable=True))


def downgrade() -> None:
    for table in ("references", "items"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("attributes")
    with op.batch_alter_table("images") as batch:
        batch.drop_constraint(op.f("ck_images_kind"), type_="check")
        batch.alter_column("size_bytes", type_=sa.Integer(), existing_type=sa.BigInteger(), existing_nullable=False)
        batch.drop_column("duration_seconds")
        batch.drop_column("kind")
