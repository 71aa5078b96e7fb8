"""Usage events: one row per backend call with its device-seconds, tokens, images and items."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from capstore.store.engine import Store
from capstore.store.schema import UsageEvent


def record_usage(target: Store | Session, *, run_id: int | None, stage: str, model_id: int | None,
                 device_type: str, device_name: str | None, device_seconds: float = 0.0,
                 wall_seconds: float = 0.0, tokens_in: int = 0, tokens_out: int = 0, images: int = 0,
                 items: int = 0, calls: int = 1, cached: int = 0, worker: str | None = None) -> None:
    """Write one usage event (in ``target``'s transaction if a Session, else in its own)."""
    row: dict[str, Any] = dict(
        run_id=run_id, stage=stage, model_id=model_id, device_type=device_type, device_name=device_name,
        device_seconds=device_seconds, wall_seconds=wall_seconds, tokens_in=tokens_in, tokens_out=tokens_out,
        images=images, items=items, calls=calls, cached=cached, worker=worker,
    )
    if isinstance(target, Session):
        target.add(UsageEvent(**row))
    else:
        target.insert_one(UsageEvent.__table__, row)  # type: ignore[arg-type]
