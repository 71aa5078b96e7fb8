"""The price table: rates that turn usage into dollars, so that cost is a query.

Kinds: ``device_hour`` (key: device name as recorded in usage events, ``*`` for any GPU without
its own rate), ``tokens_in_1m`` / ``tokens_out_1m`` (key: API model name, per million tokens),
``image`` (key: API model name, per image). Seeded by migration 0002 from the MILS cost study.
"""

from __future__ import annotations

import math

from sqlalchemy import select

from capstore.errors import InputError
from capstore.inputs import check_text
from capstore.store.content import insert_ignore
from capstore.store.engine import Store
from capstore.store.schema import Price, utcnow

PRICE_KINDS = ("device_hour", "tokens_in_1m", "tokens_out_1m", "image")


def list_prices(store: Store) -> list[Price]:
    """All rates, by kind and key."""
    with store.read() as s:
        return list(s.scalars(select(Price).order_by(Price.kind, Price.key)))


def set_price(store: Store, kind: str, key: str, usd: float, source: str | None = None) -> None:
    """Create or change one rate."""
    if kind not in PRICE_KINDS:
        raise InputError(f"unknown price kind {kind!r}; expected one of {', '.join(PRICE_KINDS)}")
    check_text(key, "price key")
    if source is not None:
        check_text(source, "--source")
    if not math.isfinite(usd) or usd < 0:
        raise InputError(f"price {usd} for {kind} {key!r} must be a finite number >= 0 (dollars)")
    with store.write() as s:
        insert_ignore(s, Price, [{"kind": kind, "key": key, "usd": usd, "source": source, "updated_at": utcnow()}])
        row = s.scalar(select(Price).where(Price.kind == kind, Price.key == key))
        assert row is not None
        row.usd, row.source = usd, source or row.source
