"""The dataset formats ``capstore dataset add NAME --format F FILE`` reads: one module each, one registry.

Each format module has ``parse(path, options) -> {split: [ItemSpec]}`` and ``LABELLED_SPLITS`` (the
file names its items' splits, and ``--split`` picks one; otherwise the file is one split and
``--split`` names it). Modules are imported only when their format is asked for. Adding a format =
one module + its line in ``FORMATS`` + its test.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from capstore.datasets.importer import ImportSummary, write_splits
from capstore.datasets.records import FormatOptions
from capstore.errors import InputError
from capstore.inputs import display, storable_path
from capstore.store.engine import Store

# format -> (module, what its --media folder holds; None: no folder needed)
FORMATS: dict[str, tuple[str, str | None]] = {
    "coco": ("capstore.datasets.coco", "images"),
    "karpathy": ("capstore.datasets.karpathy", "images"),
    "nocaps": ("capstore.datasets.nocaps", "images"),
    "vizwiz": ("capstore.datasets.vizwiz", "images"),
    "textcaps": ("capstore.datasets.textcaps", "images"),
    "cc3m": ("capstore.datasets.cc3m", "images"),
    "hf": ("capstore.datasets.hf", None),
    "msrvtt": ("capstore.datasets.msrvtt", "videos"),
    "clotho": ("capstore.datasets.clotho", "audio clips"),
}


def add_dataset(store: Store, name: str, fmt: str, file: str | Path, *, media: str | Path | None = None,
                split: str | None = None, allow_missing: bool = False, image_column: str | None = None,
                caption_column: str | None = None) -> list[ImportSummary]:
    """Import ``file`` of format ``fmt`` (with its media folder) as dataset ``name``: every split it
    holds, or ``split``, in one transaction; one summary per split. Bad input is a one-line InputError
    and nothing is stored."""
    if fmt not in FORMATS:
        raise InputError(f"unknown dataset format {fmt!r}; known: {', '.join(FORMATS)}")
    module_name, holds = FORMATS[fmt]
    if fmt != "hf" and (image_column or caption_column):
        raise InputError(f"--{'image' if image_column else 'caption'}-column applies to --format hf, not {fmt}")
    folder = None if media is None else Path(media)
    if folder is not None:
        if not folder.is_dir():
            raise InputError(f"media folder {display(folder)} does not exist")
        storable_path(folder, "media folder")
    elif holds is not None:
        raise InputError(f"--format {fmt} needs --media DIR, the folder of its {holds}")
    path = Path(file)
    options = FormatOptions(media=folder, split=split, image_column=image_column, caption_column=caption_column)
    splits = importlib.import_module(module_name).parse(path, options)
    source = storable_path(path, f"{fmt} file") if path.exists() else str(file)
    return write_splits(store, name, source, splits, allow_missing)
