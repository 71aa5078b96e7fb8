"""Importing VizWiz-Captions (``train.json``, ``val.json``, ``test.json`` of the 2020 release).

COCO-style: ``images[]`` with ``id``, ``file_name`` (and ``text_detected``, kept as an item attribute),
``annotations[]`` with ``image_id``, ``caption``, ``is_rejected`` and ``is_precanned``. As the
official evaluation does (its ``VizWiz(annotation_file, ignore_rejected=True, ignore_precanned=False)``),
rejected captions are dropped and pre-canned ones ("Quality issues are too severe to recognize
visual content.") kept, each reference carrying ``{"is_precanned": …}`` so a query can leave them out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from capstore.datasets.coco import parse_coco_like
from capstore.datasets.importer import ItemSpec
from capstore.datasets.records import FormatOptions, Records, pick_split, split_from_name

WHAT = "VizWiz-Captions"
LABELLED_SPLITS = False


def parse(path: Path, options: FormatOptions) -> dict[str, list[ItemSpec]]:
    """``--format vizwiz``: one split (``--split``, default from the file name: train, val or test)."""
    assert options.media is not None
    rec = Records(path, WHAT)

    def image(img: dict[str, Any], where: str) -> dict[str, Any] | None:
        if "text_detected" not in img:
            return None
        return {"text_detected": rec.flag(img["text_detected"], f"{where}.text_detected")}

    def annotation(ann: dict[str, Any], where: str) -> dict[str, Any] | None:
        if rec.flag(ann.get("is_rejected", False), f"{where}.is_rejected"):
            return None  # dropped, as the official evaluation does
        return {"is_precanned": rec.flag(ann.get("is_precanned", False), f"{where}.is_precanned")}

    specs = parse_coco_like(path, options.media, WHAT, item_hook=image, annotation_hook=annotation,
                            annotations_required=False)
    split = options.split or split_from_name(path, {"train": "train", "test": "test"}, "val")
    return pick_split(rec, {split: specs}, None, False)
