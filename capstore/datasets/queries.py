"""Listing and describing the datasets of a store."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select

from capstore.datasets.lookup import find_dataset
from capstore.store.content import get_texts
from capstore.store.engine import Store
from capstore.store.schema import Dataset, Item, Reference, Split


@dataclass
class SplitInfo:
    name: str
    items: int
    references: int
    images: int
    source: str | None


def _split_infos(store: Store, dataset_id: int) -> list[SplitInfo]:
    with store.read() as s:
        rows = s.execute(
            select(Split.name, Split.source, func.count(func.distinct(Item.id)), func.count(Reference.id),
                   func.count(func.distinct(Item.image_sha)))
            .select_from(Split).outerjoin(Item, Item.split_id == Split.id)
            .outerjoin(Reference, Reference.item_id == Item.id)
            .where(Split.dataset_id == dataset_id).group_by(Split.id, Split.name, Split.source).order_by(Split.name)
        ).all()
    return [SplitInfo(name=r[0], source=r[1], items=r[2], references=r[3], images=r[4]) for r in rows]


def list_datasets(store: Store) -> list[tuple[str, list[SplitInfo]]]:
    """Every dataset with its splits' counts."""
    with store.read() as s:
        datasets = s.execute(select(Dataset.id, Dataset.name).order_by(Dataset.name)).all()
    return [(name, _split_infos(store, ds_id)) for ds_id, name in datasets]


def show_dataset(store: Store, name: str, samples: int = 3) -> tuple[list[SplitInfo], list[tuple[str, list[str]]]]:
    """A dataset's splits and a few sample items with their references."""
    with store.read() as s:
        ds = find_dataset(s, name)
        items = s.execute(
            select(Item.id, Item.external_id).join(Split).where(Split.dataset_id == ds.id)
            .order_by(Item.id).limit(samples)
        ).all()
        refs = s.execute(
            select(Reference.item_id, Reference.text_sha).where(Reference.item_id.in_([i for i, _ in items]))
            .order_by(Reference.item_id, Reference.ordinal)
        ).all()
        texts = get_texts(s, [sha for _, sha in refs])
    sample = [(ext, [texts[sha] for item_id, sha in refs if item_id == iid]) for iid, ext in items]
    return _split_infos(store, ds.id), sample
