"""Writing dataset splits into the store: media by sha256, items, references — in one transaction.

Order: media files are read and hashed first (with a progress bar, outside the transaction), then
one write transaction inserts datasets/splits, media, media files/blobs, texts, items and
references with ``ON CONFLICT DO NOTHING``. Re-importing the same thing therefore adds nothing, and
two processes importing at once serialise on the transaction instead of duplicating rows. A format
that holds several splits (Karpathy's files, a ``datasets`` DatasetDict) writes them all in that
one transaction (``write_splits``).

Images are decoded whole at import (a cut or corrupt one is refused); videos and audio clips are
hashed, recognised by their first bytes and probed, not decoded (``capstore.store.media``).
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from sqlalchemy import func, select
from sqlalchemy.orm import Session
from tqdm import tqdm

from capstore.errors import InputError, first_line
from capstore.inputs import check_text, display, read_bytes, storable_path
from capstore.store.content import insert_ignore, put_texts, sha256_bytes
from capstore.store.engine import Store
from capstore.store.media import describe_kind, inspect_media
from capstore.store.schema import Dataset, Image, ImageBlob, ImageFile, Item, Reference, Split


@dataclass
class ItemSpec:
    """One item to import: an external id, where its medium is (a path or bytes), its references and
    attributes (``kind``: image, video or audio; ``ref_attributes[n]`` belongs to ``references[n]``)."""

    external_id: str
    file_name: str | None = None
    path: Path | None = None
    data: bytes | None = None
    references: list[tuple[str, str | None]] = field(default_factory=list)  # (caption, annotation id)
    kind: str = "image"
    attributes: dict[str, Any] | None = None
    ref_attributes: list[dict[str, Any] | None] = field(default_factory=list)


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
    kind: str = "image"  # of the split's media

    @property
    def added_nothing(self) -> bool:
        return self.items_new == 0 and self.references_new == 0 and self.images_new == 0

    def describe(self) -> str:
        """One line for the CLI."""
        where = f"{self.dataset}/{self.split}"
        if self.added_nothing:
            return f"{where}: already imported ({self.items} items, {self.references} references); nothing added"
        text = (f"{where}: added {self.items_new} of {self.items} items, {self.references_new} of "
                f"{self.references} references, {self.images_new} new {describe_kind(self.kind)}")
        if self.missing_images:
            text += f"; {len(self.missing_images)} items without {self.kind} (first: {self.missing_images[0]})"
        return text


@dataclass
class _ImageInfo:
    sha: str
    size: int
    width: int | None
    height: int | None
    format: str | None
    name: str
    path: Path | None
    data: bytes | None
    stored_path: str | None = None  # the resolved path as stored in image_files
    kind: str = "image"
    duration: float | None = None


def _inspect_image(data: bytes, name: str, path: Path | None, keep_bytes: bool) -> _ImageInfo:
    """Check that ``data`` is a whole image: its structure (``verify``) and its pixels decode (``load``).

    ``verify`` alone passes a JPEG cut in half (Pillow opens lazily and JPEG has no checksums), so
    the pixels are decoded too; JPEGs at 1/8 scale (``draft``), which still reads every byte.
    """
    from PIL import Image as PILImage

    where = display(path) if path is not None else name
    if not data:
        raise InputError(f"image file {where} is empty (0 bytes)")
    try:
        with PILImage.open(io.BytesIO(data)) as img:
            img.verify()  # checks the file's structure (PNG chunk checksums) without decoding
        with PILImage.open(io.BytesIO(data)) as img:
            width, height, fmt = img.width, img.height, img.format
            if fmt == "JPEG":
                img.draft("RGB", (max(1, width // 8), max(1, height // 8)))
            img.load()  # a truncated file fails here ("image file is truncated")
    except PILImage.DecompressionBombError as exc:
        raise InputError(f"image file {where} is too large to decode ({exc})") from exc
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as exc:  # UnidentifiedImageError is an OSError
        raise InputError(f"image file {where} is not a readable image ({first_line(exc, named=True)})"[:400]) from exc
    return _ImageInfo(sha256_bytes(data), len(data), width, height, fmt, name, path, data if keep_bytes else None)


def _inspect(spec: ItemSpec) -> _ImageInfo:
    """Hash and check one item's medium: an image decoded whole, a video or clip by container and header."""
    if spec.kind == "image":
        if spec.data is not None:
            return _inspect_image(spec.data, spec.file_name or spec.external_id, None, True)
        assert spec.path is not None
        info = _inspect_image(read_bytes(spec.path, "image file"), spec.path.name, spec.path, False)
    else:
        assert spec.path is not None  # videos and audio clips are kept by path, never as blobs
        found = inspect_media(spec.path, spec.kind)
        info = _ImageInfo(found.sha, found.size, found.width, found.height, found.format, spec.path.name,
                          spec.path, None, kind=spec.kind, duration=found.duration)
    info.stored_path = storable_path(spec.path, f"{spec.kind} file")
    return info


def read_images(specs: Sequence[ItemSpec], allow_missing: bool, source: str) -> tuple[dict[str, _ImageInfo], list[str]]:
    """Hash and check every item's medium; returns {external_id: info} and the missing file names."""
    infos: dict[str, _ImageInfo] = {}
    missing: list[str] = []
    for spec in tqdm(specs, desc="hashing media", unit="file", disable=len(specs) < 50, leave=False):
        if spec.data is not None or (spec.path is not None and spec.path.is_file()):
            infos[spec.external_id] = _inspect(spec)
        else:
            missing.append(spec.file_name or spec.external_id)
    if missing and not allow_missing:
        kind = specs[0].kind
        raise InputError(
            f"{len(missing)} of {len(specs)} {kind} files are missing in {source} (first: {missing[0]}); "
            f"pass --allow-missing-images to import those items without {describe_kind(kind)}"
        )
    return infos, missing


def _count(session: Session, stmt) -> int:  # type: ignore[no-untyped-def]
    return int(session.scalar(select(func.count()).select_from(stmt.subquery())) or 0)


def write_split(
    store: Store, dataset: str, split: str, source: str, specs: Sequence[ItemSpec], allow_missing: bool = False
) -> ImportSummary:
    """Import ``specs`` as ``dataset``/``split`` in one transaction and say what was new."""
    return write_splits(store, dataset, source, {split: specs}, allow_missing)[0]


def write_splits(store: Store, dataset: str, source: str, splits: Mapping[str, Sequence[ItemSpec]],
                 allow_missing: bool = False) -> list[ImportSummary]:
    """Import several splits of ``dataset`` (split name -> items) in one transaction; one summary each."""
    check_text(dataset, "dataset name")
    for split in splits:
        check_text(split, "split name")
    read = {split: read_images(specs, allow_missing, source) for split, specs in splits.items()}
    with store.write() as s:
        insert_ignore(s, Dataset, [{"name": dataset}])
        ds_id = s.scalar(select(Dataset.id).where(Dataset.name == dataset))
        return [_write_one(s, ds_id, dataset, split, source, specs, *read[split]) for split, specs in splits.items()]


def _write_one(s: Session, ds_id: int, dataset: str, split: str, source: str, specs: Sequence[ItemSpec],
               infos: dict[str, _ImageInfo], missing: list[str]) -> ImportSummary:
    insert_ignore(s, Split, [{"dataset_id": ds_id, "name": split, "source": source}])
    split_id = s.scalar(select(Split.id).where(Split.dataset_id == ds_id, Split.name == split))
    items_before = _count(s, select(Item.id).where(Item.split_id == split_id))
    refs_before = _count(s, select(Reference.id).join(Item).where(Item.split_id == split_id))
    images_before = _count(s, select(Image.sha256))
    _write_images(s, list(infos.values()))
    insert_ignore(s, Item, [
        {"split_id": split_id, "external_id": sp.external_id, "file_name": sp.file_name,
         "image_sha": infos[sp.external_id].sha if sp.external_id in infos else None,
         "attributes": sp.attributes or None}
        for sp in specs
    ])
    _write_references(s, split_id, specs)
    return ImportSummary(
        dataset=dataset, split=split, items=len(specs),
        items_new=_count(s, select(Item.id).where(Item.split_id == split_id)) - items_before,
        references=sum(len(sp.references) for sp in specs),
        references_new=_count(s, select(Reference.id).join(Item).where(Item.split_id == split_id)) - refs_before,
        images_new=_count(s, select(Image.sha256)) - images_before,
        missing_images=missing, kind=specs[0].kind if specs else "image",
    )


def _write_images(s: Session, infos: list[_ImageInfo]) -> None:
    insert_ignore(s, Image, [
        {"sha256": i.sha, "size_bytes": i.size, "width": i.width, "height": i.height, "format": i.format,
         "original_name": i.name, "kind": i.kind, "duration_seconds": i.duration} for i in infos
    ])
    insert_ignore(s, ImageFile, [{"image_sha": i.sha, "path": i.stored_path} for i in infos if i.stored_path])
    insert_ignore(s, ImageBlob, [{"image_sha": i.sha, "data": i.data} for i in infos if i.data is not None])


def _write_references(s: Session, split_id: int, specs: Sequence[ItemSpec]) -> None:
    ids = dict(s.execute(select(Item.external_id, Item.id).where(Item.split_id == split_id)).all())
    captions = [text for sp in specs for text, _ in sp.references]
    shas = iter(put_texts(s, captions))
    rows = [
        {"item_id": ids[sp.external_id], "ordinal": n, "text_sha": next(shas), "external_id": ann,
         "attributes": sp.ref_attributes[n] if n < len(sp.ref_attributes) else None}
        for sp in specs for n, (_, ann) in enumerate(sp.references)
    ]
    insert_ignore(s, Reference, rows)
