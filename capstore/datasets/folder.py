"""Importing a folder of images without references (e.g. images to caption for a user study)."""

from __future__ import annotations

from pathlib import Path

from capstore.datasets.importer import ImportSummary, ItemSpec, write_split
from capstore.errors import InputError
from capstore.store.engine import Store

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


def add_images(store: Store, name: str, images_dir: str | Path, split: str = "all") -> ImportSummary:
    """Import every image under ``images_dir`` (recursively); the item id is the relative path."""
    folder = Path(images_dir)
    if not folder.is_dir():
        raise InputError(f"images folder {folder} does not exist")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise InputError(f"no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) under {folder}")
    specs = [ItemSpec(str(p.relative_to(folder)), p.name, p) for p in files]
    return write_split(store, name, split, str(folder.resolve()), specs)
