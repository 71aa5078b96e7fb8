"""Importing TextCaps (``TextCaps_0.1_train.json``, ``…_val.json``, ``…_test.json``).

``data[]`` holds one entry per caption: ``image_id``, ``image_path`` (under the TextVQA/Open Images
folder, e.g. ``train/003a8ae2ef43b901.jpg``), ``caption_str`` and ``reference_strs`` (all of the
image's captions, what the official evaluation compares with). Entries are grouped by ``image_id``;
an image's references are its ``reference_strs``, or, where an entry has none, the ``caption_str`` of
its entries. The test file has neither: items without references.
"""

from __future__ import annotations

from pathlib import Path

from capstore.datasets.importer import ItemSpec
from capstore.datasets.records import FormatOptions, Records, pick_split, resolve_media
from capstore.inputs import read_json

WHAT = "TextCaps"
LABELLED_SPLITS = False


def parse(path: Path, options: FormatOptions) -> dict[str, list[ItemSpec]]:
    """``--format textcaps``: one split (``--split``, default the file's ``dataset_type``)."""
    assert options.media is not None
    rec = Records(path, WHAT)
    data = read_json(path, "TextCaps file")
    entries = rec.list_of(data, "data")
    specs: dict[str, ItemSpec] = {}
    captions: dict[str, list[str]] = {}
    for n, entry in enumerate(entries):
        where = f"data[{n}]"
        image_id = rec.ident(rec.require(entry, "image_id", where), f"{where} image_id")
        image_path = rec.text(rec.require(entry, "image_path", where), f"{where}.image_path")
        if image_id not in specs:
            specs[image_id] = ItemSpec(image_id, image_path, resolve_media(
                rec, options.media, image_path, Path(image_path).name, f"{image_id}.jpg"))
        if "reference_strs" in entry and not specs[image_id].references:
            refs = rec.list_of(entry, "reference_strs", where)
            specs[image_id].references = [(rec.text(r, f"{where}.reference_strs[{k}]", empty=True), None)
                                          for k, r in enumerate(refs)]
        if "caption_str" in entry:
            captions.setdefault(image_id, []).append(rec.text(entry["caption_str"], f"{where}.caption_str", empty=True))
    for image_id, spec in specs.items():
        if not spec.references and image_id in captions:
            spec.references = [(c, None) for c in captions[image_id]]
    default = data.get("dataset_type") if isinstance(data.get("dataset_type"), str) and data["dataset_type"] else "val"
    return pick_split(rec, {options.split or default: list(specs.values())}, None, False)
