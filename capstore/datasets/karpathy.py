"""Importing Karpathy's splits (``dataset_coco.json``, ``dataset_flickr30k.json``, ``dataset_flickr8k.json``).

``images[]`` with ``filename`` (under ``filepath`` for COCO), ``split`` (``train``, ``restval``,
``val``, ``test``) and ``sentences[]`` whose ``raw`` text is each reference (``sentid`` its id). All
splits are imported at once, in one transaction (``--split`` imports one). The item id is the COCO
image id (``cocoid``) where there is one, so results files of COCO ids match, else the file name
without its suffix (Flickr's photo id).
"""

from __future__ import annotations

from pathlib import Path

from capstore.datasets.importer import ItemSpec
from capstore.datasets.records import FormatOptions, Records, pick_split, resolve_media, unique_items
from capstore.inputs import read_json

WHAT = "a Karpathy split file"
LABELLED_SPLITS = True


def parse(path: Path, options: FormatOptions) -> dict[str, list[ItemSpec]]:
    """``--format karpathy``: every split of the file (or ``--split``), references from ``raw``."""
    assert options.media is not None
    rec = Records(path, WHAT)
    images = rec.list_of(read_json(path, "Karpathy split file"), "images")
    splits: dict[str, list[ItemSpec]] = {}
    for n, img in enumerate(images):
        where = f"images[{n}]"
        file_name = rec.text(rec.require(img, "filename", where), f"{where}.filename")
        split = rec.text(rec.require(img, "split", where), f"{where}.split")
        folder = rec.text(img.get("filepath", ""), f"{where}.filepath", empty=True)
        item_id = rec.ident(img["cocoid"], f"{where} cocoid") if "cocoid" in img else Path(file_name).stem
        spec = ItemSpec(item_id, file_name, resolve_media(rec, options.media, f"{folder}/{file_name}" if folder else "",
                                                          file_name))
        for k, sentence in enumerate(rec.list_of(img, "sentences", where)):
            raw = rec.text(rec.require(sentence, "raw", f"{where}.sentences[{k}]"), f"{where}.sentences[{k}].raw",
                           empty=True)
            sentid = sentence.get("sentid")
            spec.references.append((raw, None if sentid is None else rec.ident(sentid, f"{where}.sentences[{k}] sentid")))
        splits.setdefault(split, []).append(spec)
    splits = {name: unique_items(rec, specs, "image", f" in split {name}") for name, specs in splits.items()}
    return pick_split(rec, splits, options.split, LABELLED_SPLITS)
