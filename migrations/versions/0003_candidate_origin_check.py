"""candidates.origin CHECK written as OR terms instead of IN (...)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23

Same rule, cheaper on SQLite: SQLite evaluates a CHECK with a literal IN-list through an ephemeral
table built on each statement execution, which made bulk candidate writes ~1.7x slower
(benchmarks/store_write.py). On SQLite the table is rebuilt (alembic batch copy); env.py turns
foreign-key enforcement off around the copy so dropping the old table cascades to nothing, and
checks every foreign key before committing.
"""
from typing import Sequence, Union

from alembic import op

revision: str = "0003"
down_revision: Union[str, None] = "0002"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

ORIGINS = ("pool", "generated", "baseline", "seed")
IN_FORM = "origin IN ('pool', 'generated', 'baseline', 'seed')"
OR_FORM = " OR ".join(f"origin = '{o}'" for o in ORIGINS)


def _set_check(expression: str) -> None:
    with op.batch_alter_table("candidates", recreate="auto") as batch:
        batch.drop_constraint(op.f("ck_candidates_origin"), type_="check")
        batch.create_check_constraint(op.f("ck_candidates_origin"), expression)


def upgrade() -> None:
    _set_check(OR_FORM)


def downgrade() -> None:
    _set_check(IN_FORM)
