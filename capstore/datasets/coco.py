"""Importing the standard COCO captions format (``images[].id/file_name``, ``annotations[].image_id/caption``).

``parse_coco_like`` also reads the formats built on it: nocaps (each image's ``domain`` kept as an
item attribute) and VizWiz-Captions (rejected captions dropped, ``is_precanned`` kept per reference),
through the hooks they pass.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from capstore.datasets.importer import ImportSummary, ItemSpec, write_split
from capstore.datasets.records import FormatOptions, Records, pick_split, resolve_media
from capstore.errors import InputError
from capstore.inputs import brief, display, read_json, storable_path
from capstore.store.engine import Store

DEFAULT_SPLIT = "test"
LABELLED_SPLITS = False  # the file is one split; --split names it

# (record, "images[3]") -> the item's attributes, or None
ItemHook = Callable[[dict[str, Any], str], "dict[str, Any] | None"]
# (record, "annotations[3]") -> None to drop the annotation, else the reference's attributes ({} for none)
AnnotationHook = Callable[[dict[str, Any], str], "dict[str, Any] | None"]


def parse_coco_like(path: Path, images_dir: Path, what: str = "COCO captions", *, item_hook: ItemHook | None = None,
                    annotation_hook: AnnotationHook | None = None, annotations_required: bool = True) -> list[ItemSpec]:
    """The items of a COCO-style captions file, with image paths resolved under ``images_dir``.

    ``annotations_required`` False: a file of images only (nocaps' and VizWiz's test splits) gives
    items without references.
    """
    rec = Records(path, what)
    data = read_json(path, f"{what} file")
    images = rec.require(data, "images", "the top level")
    if annotations_required or (isinstance(data, dict) and "annotations" in data):
        annotations = rec.require(data, "annotations", "the top level")
    else:
        annotations = []
    if not isinstance(images, list) or not isinstance(annotations, list):
        raise rec.fail(f"not {what}: 'images' and 'annotations' must be lists")
    specs: dict[str, ItemSpec] = {}
    for n, img in enumerate(images):
        where = f"images[{n}]"
        image_id = rec.ident(rec.require(img, "id", where), f"{where} id")
        file_name = rec.require(img, "file_name", where)
        if not isinstance(file_name, str) or not file_name:
            raise rec.fail(f"{where} file_name is not a file name: {brief(file_name)}")
        if image_id in specs:
            raise rec.fail(f"image id {image_id} appears twice in 'images'")
        attributes = item_hook(img, where) if item_hook else None
        specs[image_id] = ItemSpec(image_id, file_name, resolve_media(rec, images_dir, file_name, Path(file_name).name),
                                   attributes=attributes)
    for n, ann in enumerate(annotations):
        where = f"annotations[{n}]"
        image_id = rec.ident(rec.require(ann, "image_id", where), f"{where} image_id")
        caption = rec.require(ann, "caption", where)
        if not isinstance(caption, str):
            raise rec.fail(f"{where} caption is not a string")
        if image_id not in specs:
            raise rec.fail(f"annotation {ann.get('id', n)} points at unknown image_id {image_id}")
        attributes = annotation_hook(ann, where) if annotation_hook else {}
        if attributes is None:
            continue
        ann_id = ann.get("id")
        spec = specs[image_id]
        spec.references.append((caption, None if ann_id is None else str(ann_id)))
        spec.ref_attributes.append(attributes or None)
    return list(specs.values())


def parse_coco_captions(path: Path, images_dir: Path) -> list[ItemSpec]:
    """The items of a COCO captions file, with image paths resolved under ``images_dir``."""
    return parse_coco_like(path, images_dir)


def parse(path: Path, options: FormatOptions) -> dict[str, list[ItemSpec]]:
    """``--format coco``: one split (``--split``, default ``test``)."""
    assert options.media is not None
    specs = parse_coco_captions(path, options.media)
    return pick_split(Records(path, "COCO captions"), {options.split or DEFAULT_SPLIT: specs}, None, False)


def add_coco(
    store: Store, name: str, captions_json: str | Path, images_dir: str | Path,
    split: str = "test", allow_missing_images: bool = False,
) -> ImportSummary:
    """Import a COCO captions file and its images folder as ``name``/``split`` (one transaction)."""
    path, folder = Path(captions_json), Path(images_dir)
    if not folder.is_dir():
        raise InputError(f"images folder {display(folder)} does not exist")
    storable_path(folder, "images folder")
    specs = parse_coco_captions(path, folder)
    source = storable_path(path, "COCO captions file")
    return write_split(store, name, split, source, specs, allow_missing_images)
