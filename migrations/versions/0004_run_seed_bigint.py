"""runs.seed as a 64-bit integer

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01

A run seed may be any integer from 0 to 2**63-1 (``capstore run --seed``); PostgreSQL's INTEGER
holds only 31 bits, so a larger seed failed there while SQLite stored it. SQLite's INTEGER is 64-bit
already, but the declared type is rewritten too (a batch copy of the small ``runs`` table; env.py
keeps foreign keys off around it) so that both engines' schemas match the models.
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: Union[str, None] = "0003"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def _seed_type(new: sa.types.TypeEngine, old: sa.types.TypeEngine) -> None:
    with op.batch_alter_table("runs") as batch:
        batch.alter_column("seed", type_=new, existing_type=old, existing_nullable=False)


def upgrade() -> None:
    _seed_type(sa.BigInteger(), sa.Integer())


def downgrade() -> None:
    _seed_type(sa.Integer(), sa.BigInteger())
