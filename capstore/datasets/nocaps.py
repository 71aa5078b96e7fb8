"""Importing nocaps (``nocaps_val_4500_captions.json``, ``nocaps_test_image_info.json``).

COCO-style: ``images[]`` with ``id``, ``file_name`` and ``domain`` (``in-domain``, ``near-domain`` or
``out-domain``, kept as the item attribute ``domain``), ``annotations[]`` with ``image_id`` and
``caption`` (absent in the test file: items without references). ``sql/metrics_by_attribute.sql``
gives the nocaps table from it (CIDEr and SPICE per domain and overall).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from capstore.datasets.coco import parse_coco_like
from capstore.datasets.importer import ItemSpec
from capstore.datasets.records import FormatOptions, Records, pick_split, split_from_name
from capstore.inputs import brief

WHAT = "nocaps captions"
DOMAINS = ("in-domain", "near-domain", "out-domain")
LABELLED_SPLITS = False


def parse(path: Path, options: FormatOptions) -> dict[str, list[ItemSpec]]:
    """``--format nocaps``: one split (``--split``, default ``test`` for a file named so, else ``val``)."""
    assert options.media is not None
    rec = Records(path, WHAT)

    def domain(img: dict[str, Any], where: str) -> dict[str, Any]:
        value = rec.require(img, "domain", where)
        if value not in DOMAINS:
            raise rec.fail(f"{where} domain is {brief(value)}, expected one of {', '.join(DOMAINS)}")
        return {"domain": value}

    specs = parse_coco_like(path, options.media, WHAT, item_hook=domain, annotations_required=False)
    split = options.split or split_from_name(path, {"test": "test"}, "val")
    return pick_split(rec, {split: specs}, None, False)
