"""Importing the standard COCO captions format (``images[].id/file_name``, ``annotations[].image_id/caption``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from capstore.datasets.importer import ImportSummary, ItemSpec, write_split
from capstore.errors import InputError
from capstore.store.engine import Store


def load_json(path: Path) -> Any:
    """Parse a JSON file; InputError naming the file and the position of the first error."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from exc


def _require(obj: Any, key: str, where: str, path: Path) -> Any:
    if not isinstance(obj, dict) or key not in obj:
        raise InputError(f"{path}: not COCO captions: {where} has no {key!r}")
    return obj[key]


def parse_coco_captions(path: Path, images_dir: Path) -> list[ItemSpec]:
    """The items of a COCO captions file, with image paths resolved under ``images_dir``."""
    data = load_json(path)
    images = _require(data, "images", "the top level", path)
    annotations = _require(data, "annotations", "the top level", path)
    if not isinstance(images, list) or not isinstance(annotations, list):
        raise InputError(f"{path}: not COCO captions: 'images' and 'annotations' must be lists")
    specs: dict[str, ItemSpec] = {}
    for n, img in enumerate(images):
        image_id = str(_require(img, "id", f"images[{n}]", path))
        file_name = str(_require(img, "file_name", f"images[{n}]", path))
        if image_id in specs:
            raise InputError(f"{path}: image id {image_id} appears twice in 'images'")
        specs[image_id] = ItemSpec(image_id, file_name, _resolve(images_dir, file_name))
    for n, ann in enumerate(annotations):
        image_id = str(_require(ann, "image_id", f"annotations[{n}]", path))
        caption = _require(ann, "caption", f"annotations[{n}]", path)
        if not isinstance(caption, str):
            raise InputError(f"{path}: annotations[{n}] caption is not a string")
        if image_id not in specs:
            raise InputError(f"{path}: annotation {ann.get('id', n)} points at unknown image_id {image_id}")
        ann_id = ann.get("id")
        specs[image_id].references.append((caption, None if ann_id is None else str(ann_id)))
    return list(specs.values())


def _resolve(images_dir: Path, file_name: str) -> Path:
    direct = images_dir / file_name
    return direct if direct.exists() else images_dir / Path(file_name).name


def add_coco(
    store: Store, name: str, captions_json: str | Path, images_dir: str | Path,
    split: str = "test", allow_missing_images: bool = False,
) -> ImportSummary:
    """Import a COCO captions file and its images folder as ``name``/``split`` (one transaction)."""
    path, folder = Path(captions_json), Path(images_dir)
    if not folder.is_dir():
        raise InputError(f"images folder {folder} does not exist")
    specs = parse_coco_captions(path, folder)
    return write_split(store, name, split, str(path.resolve()), specs, allow_missing_images)
