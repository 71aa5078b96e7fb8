"""Writing a dataset split into the store: images by sha256, items, references — in one transaction.

Order: image files are read and hashed first (with a progress bar, outside the transaction), then
one write transaction inserts datasets/splits, images, image files/blobs, texts, items and
references with ``ON CONFLICT DO NOTHING``. Re-importing the same thing therefore adds nothing, and
two processes importing at once serialise on the transaction instead of duplicating rows.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from sqlalchemy import func, select
from sqlalchemy.orm import Session
from tqdm import tqdm

from capstore.errors import InputError
from capstore.store.content import insert_ignore, put_texts, sha256_bytes
from capstore.store.engine import Store
from capstore.store.schema import Dataset, Image, ImageBlob, ImageFile, Item, Reference, Split


@dataclass
class ItemSpec:
    """One item to import: an external id, where its image is (a path or bytes) and its references."""

    external_id: str
    file_name: str | None = None
    path: Path | None = None
    data: bytes | None = None
    references: list[tuple[str, str | None]] = field(default_factory=list)  # (caption, annotation id)


@dataclass
class ImportSummary:
    """What an import added (``*_new``) out of what it was given."""

    dataset: str
    split: str
    items: int
    items_new: int
    references: int
    references_new: int
    images_new: int
    missing_images: list[str] = field(default_factory=list)

    @property
    def added_nothing(self) -> bool:
        return self.items_new == 0 and self.references_new == 0 and self.images_new == 0

    def describe(self) -> str:
        """One line for the CLI."""
        where = f"{self.dataset}/{self.split}"
        if self.added_nothing:
            return f"{where}: already imported ({self.items} items, {self.references} references); nothing added"
        text = (f"{where}: added {self.items_new} of {self.items} items, {self.references_new} of "
                f"{self.references} references, {self.images_new} new images")
        if self.missing_images:
            text += f"; {len(self.missing_images)} items without image (first: {self.missing_images[0]})"
        return text


@dataclass
class _ImageInfo:
    sha: str
    size: int
    width: int
    height: int
    format: str | None
    name: str
    path: Path | None
    data: bytes | None


def _inspect_image(data: bytes, name: str, path: Path | None, keep_bytes: bool) -> _ImageInfo:
    from PIL import Image as PILImage
    from PIL import UnidentifiedImageError

    try:
        with PILImage.open(io.BytesIO(data)) as img:
            img.verify()  # checks the file's structure without decoding all pixels
            width, height, fmt = img.width, img.height, img.format
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"image file {path or name} is not a readable image ({exc.__class__.__name__})") from exc
    return _ImageInfo(sha256_bytes(data), len(data), width, height, fmt, name, path, data if keep_bytes else None)


def read_images(specs: Sequence[ItemSpec], allow_missing: bool, source: str) -> tuple[dict[str, _ImageInfo], list[str]]:
    """Hash and check every item's image; returns {external_id: info} and the missing file names."""
    infos: dict[str, _ImageInfo] = {}
    missing: list[str] = []
    for spec in tqdm(specs, desc="hashing images", unit="img", disable=len(specs) < 50, leave=False):
        if spec.data is not None:
            infos[spec.external_id] = _inspect_image(spec.data, spec.file_name or spec.external_id, None, True)
        elif spec.path is not None and spec.path.is_file():
            infos[spec.external_id] = _inspect_image(spec.path.read_bytes(), spec.path.name, spec.path, False)
        else:
            missing.append(spec.file_name or spec.external_id)
    if missing and not allow_missing:
        raise InputError(
            f"{len(missing)} of {len(specs)} image files are missing in {source} (first: {missing[0]}); "
            "pass --allow-missing-images to import those items without images"
        )
    return infos, missing


def _count(session: Session, stmt) -> int:  # type: ignore[no-untyped-def]
    return int(session.scalar(select(func.count()).select_from(stmt.subquery())) or 0)


def write_split(
    store: Store, dataset: str, split: str, source: str, specs: Sequence[ItemSpec], allow_missing: bool = False
) -> ImportSummary:
    """Import ``specs`` as ``dataset``/``split`` in one transaction and say what was new."""
    infos, missing = read_images(specs, allow_missing, source)
    with store.write() as s:
        insert_ignore(s, Dataset, [{"name": dataset}])
        ds_id = s.scalar(select(Dataset.id).where(Dataset.name == dataset))
        insert_ignore(s, Split, [{"dataset_id": ds_id, "name": split, "source": source}])
        split_id = s.scalar(select(Split.id).where(Split.dataset_id == ds_id, Split.name == split))
        items_before = _count(s, select(Item.id).where(Item.split_id == split_id))
        refs_before = _count(s, select(Reference.id).join(Item).where(Item.split_id == split_id))
        images_before = _count(s, select(Image.sha256))
        _write_images(s, list(infos.values()))
        insert_ignore(s, Item, [
            {"split_id": split_id, "external_id": sp.external_id, "file_name": sp.file_name,
             "image_sha": infos[sp.external_id].sha if sp.external_id in infos else None}
            for sp in specs
        ])
        _write_references(s, split_id, specs)
        return ImportSummary(
            dataset=dataset, split=split, items=len(specs),
            items_new=_count(s, select(Item.id).where(Item.split_id == split_id)) - items_before,
            references=sum(len(sp.references) for sp in specs),
            references_new=_count(s, select(Reference.id).join(Item).where(Item.split_id == split_id)) - refs_before,
            images_new=_count(s, select(Image.sha256)) - images_before,
            missing_images=missing,
        )


def _write_images(s: Session, infos: list[_ImageInfo]) -> None:
    insert_ignore(s, Image, [
        {"sha256": i.sha, "size_bytes": i.size, "width": i.width, "height": i.height,
         "format": i.format, "original_name": i.name} for i in infos
    ])
    insert_ignore(s, ImageFile, [{"image_sha": i.sha, "path": str(i.path.resolve())} for i in infos if i.path])
    insert_ignore(s, ImageBlob, [{"image_sha": i.sha, "data": i.data} for i in infos if i.data is not None])


def _write_references(s: Session, split_id: int, specs: Sequence[ItemSpec]) -> None:
    ids = dict(s.execute(select(Item.external_id, Item.id).where(Item.split_id == split_id)).all())
    captions = [text for sp in specs for text, _ in sp.references]
    shas = iter(put_texts(s, captions))
    rows = [
        {"item_id": ids[sp.external_id], "ordinal": n, "text_sha": next(shas), "external_id": ann}
        for sp in specs for n, (_, ann) in enumerate(sp.references)
    ]
    insert_ignore(s, Reference, rows)
