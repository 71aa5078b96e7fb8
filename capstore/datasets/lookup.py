"""Finding datasets and splits by name, with errors that list what exists."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from capstore.errors import InputError
from capstore.inputs import check_text
from capstore.store.schema import Dataset, Split


def find_dataset(session: Session, name: str) -> Dataset:
    """The dataset called ``name``; InputError listing the known names otherwise."""
    check_text(name, "dataset name")
    dataset = session.scalar(select(Dataset).where(Dataset.name == name))
    if dataset is None:
        known = session.scalars(select(Dataset.name).order_by(Dataset.name)).all()
        hint = f"known: {', '.join(known)}" if known else "the store has no datasets (try `capstore dataset demo`)"
        raise InputError(f"unknown dataset {name!r}; {hint}")
    return dataset


def find_split(session: Session, dataset: str, split: str | None = None) -> Split:
    """A split of ``dataset``; with ``split`` None the dataset must have exactly one."""
    ds = find_dataset(session, dataset)
    if split is not None:
        check_text(split, "split name")
    splits = session.scalars(select(Split).where(Split.dataset_id == ds.id).order_by(Split.name)).all()
    if split is None:
        if len(splits) == 1:
            return splits[0]
        raise InputError(f"dataset {dataset!r} has splits {', '.join(s.name for s in splits)}; choose one with --split")
    for s in splits:
        if s.name == split:
            return s
    raise InputError(f"dataset {dataset!r} has no split {split!r}; known: {', '.join(s.name for s in splits)}")
