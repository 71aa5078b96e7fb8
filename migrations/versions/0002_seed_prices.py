"""seed the price table with the rates implied by the MILS cost study

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23

Data only: every store starts with these rates, editable with `capstore prices set`.
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: Union[str, None] = "0001"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

SEED = [
    # kind, key, usd, source
    ("device_hour", "*", 291.66 / 116, "cost study: MILS, $291.66 for 116 GPU-hours on COCO Karpathy test (5,000 images)"),
    ("device_hour", "NVIDIA A10G", 0.65 / (31 / 60), "cost study: BLIP-2 on an A10G, $0.65 for 31 minutes"),
    ("device_hour", "cpu", 0.0, "local CPU time is not billed by default"),
    ("image", "gpt-4-vision-preview", 5.41 / 5000, "cost study: GPT-4V, $5.41 for 5,000 images"),
]


def upgrade() -> None:
    prices = sa.table("prices", sa.column("kind", sa.String), sa.column("key", sa.String),
                      sa.column("usd", sa.Float), sa.column("source", sa.Text), sa.column("updated_at", sa.DateTime))
    from datetime import datetime, timezone

    now = datetime.now(timezone.utc)
    op.bulk_insert(prices, [{"kind": k, "key": key, "usd": usd, "source": src, "updated_at": now} for k, key, usd, src in SEED])


def downgrade() -> None:
    op.execute("DELETE FROM prices WHERE source LIKE 'cost study:%' OR source = 'local CPU time is not billed by default'")
