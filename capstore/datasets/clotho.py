"""Importing Clotho (``clotho_captions_development.csv``, ``…_evaluation.csv``, ``…_validation.csv``).

A CSV with the header ``file_name,caption_1,…,caption_5``: one audio clip a row (the WAV file of
that name in the media folder, kept by path, sha256 and size), its five captions the references.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from capstore.datasets.importer import ItemSpec
from capstore.datasets.records import FormatOptions, Records, media_path, pick_split, split_from_name, unique_items
from capstore.inputs import read_text

WHAT = "Clotho captions (file_name,caption_1..caption_5)"
LABELLED_SPLITS = False


def parse(path: Path, options: FormatOptions) -> dict[str, list[ItemSpec]]:
    """``--format clotho``: one split (``--split``, default from the file name: development, evaluation…)."""
    assert options.media is not None
    rec = Records(path, WHAT)
    reader = csv.reader(io.StringIO(read_text(path, "Clotho captions file"), newline=""), strict=True)
    try:
        header = next(reader, None)
        if header is None:
            raise rec.fail("is empty: expected the header file_name,caption_1,...,caption_5")
        header = [h.strip() for h in header]
        captions = [k for k, h in enumerate(header) if h.startswith("caption_")]
        if "file_name" not in header or not captions:
            raise rec.fail(f"not {WHAT}: its header is {','.join(header)[:120]!r}")
        name_at = header.index("file_name")
        specs = []
        for row in reader:
            line = reader.line_num
            if not row:
                continue
            if len(row) != len(header):
                raise rec.fail(f"line {line} has {len(row)} fields, the header {len(header)}")
            file_name = rec.text(row[name_at], f"line {line} file_name")
            specs.append(ItemSpec(file_name, file_name, media_path(rec, options.media, file_name), kind="audio",
                                  references=[(row[k], None) for k in captions if row[k].strip()]))
    except csv.Error as exc:
        raise rec.fail(f"malformed CSV at line {reader.line_num}: {exc}") from exc
    split = options.split or split_from_name(
        path, {"development": "development", "evaluation": "evaluation", "validation": "validation"}, "all")
    return pick_split(rec, {split: unique_items(rec, specs, "clip")}, None, False)
