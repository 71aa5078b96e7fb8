"""Importing Conceptual Captions 3M (``Train_GCC-training.tsv``, ``Validation_GCC-1.1.0-Validation.tsv``).

Each line is ``caption<TAB>url`` (no header). The images are the files a downloader wrote into the
media folder, named by row: the 0-based row number as the file's name without suffix, zero-padded
or not, in sub-folders or not (img2dataset's ``00000/000000017.jpg`` is row 17). The item id is the
row number, the caption its one reference and the URL the item attribute ``url``. Rows whose image
was never downloaded (dead links are common) are imported without image only with
``--allow-missing-images``.
"""

from __future__ import annotations

from pathlib import Path

from capstore.datasets.folder import image_files
from capstore.datasets.importer import ItemSpec
from capstore.datasets.records import FormatOptions, Records, pick_split, split_from_name
from capstore.inputs import display, read_text

WHAT = "a Conceptual Captions TSV (caption<TAB>url)"
LABELLED_SPLITS = False


def parse(path: Path, options: FormatOptions) -> dict[str, list[ItemSpec]]:
    """``--format cc3m``: one split (``--split``, default ``train`` or ``val`` from the file name)."""
    assert options.media is not None
    rec = Records(path, WHAT)
    by_row = _files_by_row(rec, options.media)
    specs = []
    for n, line in enumerate(read_text(path, "Conceptual Captions file").split("\n")):
        line = line.removesuffix("\r")
        if not line:
            continue
        fields = line.split("\t")
        if len(fields) != 2:
            raise rec.fail(f"line {n + 1} has {len(fields)} tab-separated fields, expected 2 (caption<TAB>url)")
        caption, url = fields
        if not caption.strip():
            raise rec.fail(f"line {n + 1} has an empty caption")
        found = by_row.get(n)
        specs.append(ItemSpec(str(n), found.name if found else f"row {n}", found,
                              references=[(caption, None)], attributes={"url": url}))
    split = options.split or split_from_name(path, {"valid": "val", "train": "train"}, "all")
    return pick_split(rec, {split: specs}, None, False)


def _files_by_row(rec: Records, folder: Path) -> dict[int, Path]:
    """The media folder's images by the row number their name says (``000000017.jpg`` -> 17)."""
    rows: dict[int, Path] = {}
    for path in image_files(folder):
        if not path.stem.isdigit():
            continue
        row = int(path.stem)
        if row in rows:
            raise rec.fail(f"two files in the media folder are row {row}: {display(rows[row])} and {display(path)}")
        rows[row] = path
    return rows
