"""Importing a Hugging Face ``datasets`` dataset: a folder saved with ``save_to_disk``, or a hub name.

The image column (``--image-column``, default ``image``) is a ``datasets.Image`` feature (its bytes
are kept in the store as blobs: the dataset's Arrow files hold them, no image folder exists) or a
string column of file paths (read under ``--media``, else the dataset's folder). The caption column
(``--caption-column``, default ``caption``) holds a string or a list of strings: the references. The
item id is the ``image_id`` or ``id`` column where there is one, else the row number. A
``DatasetDict`` is imported split by split in one transaction (``--split`` imports one); a single
``Dataset`` is one split (``--split`` names it, default its own split name or ``train``).

A hub name (``org/name``) is loaded with ``datasets.load_dataset`` where the machine can reach the
hub or has it cached; with ``HF_HUB_OFFLINE=1`` and nothing cached it is a one-line error.
Needs the ``datasets`` package (``pip install 'capstore[hf]'``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from capstore.datasets.importer import ItemSpec
from capstore.datasets.records import FormatOptions, Records, pick_split, unique_items
from capstore.errors import InputError, first_line
from capstore.inputs import display

WHAT = "a datasets dataset"
ID_COLUMNS = ("image_id", "id")


def load(source: str) -> Any:
    """A ``Dataset`` or ``DatasetDict`` from a ``save_to_disk`` folder or a hub name; InputError otherwise."""
    try:
        import datasets
    except ImportError as exc:
        raise InputError("--format hf needs the datasets package: pip install 'capstore[hf]'") from exc
    path = Path(source).expanduser()
    try:
        if path.exists():
            if not path.is_dir():
                raise InputError(f"{display(path)} is not a folder saved with datasets' save_to_disk")
            return datasets.load_from_disk(str(path))
        if source.startswith(("/", ".", "~")) or source.count("/") > 1:
            raise InputError(f"dataset folder {display(source)} does not exist")
        _check_hub(source)
        return datasets.load_dataset(source)
    except InputError:
        raise
    except Exception as exc:  # FileNotFoundError, a folder of something else, the hub unreachable…
        raise InputError(f"cannot load dataset {display(source)} with datasets: {first_line(exc, 300)}") from exc


def _check_hub(name: str) -> None:
    """A hub name needs the hub, or ``HF_HUB_OFFLINE=1`` and its files cached: refuse at once, not after
    minutes of the hub client's retries."""
    from capstore.backends.preflight import hub_address, hub_offline, hub_reachable

    if not hub_offline() and not hub_reachable():
        host, port = hub_address()
        raise InputError(f"dataset {display(name)} is no folder here and {host}:{port} cannot be reached (no "
                         "network?); save it with save_to_disk where there is, or set HF_HUB_OFFLINE=1 to "
                         "load it from the local cache")


def parse(path: Path, options: FormatOptions) -> dict[str, list[ItemSpec]]:
    """``--format hf``: the splits of a saved (or hub) dataset, images and captions from their columns."""
    import datasets

    loaded = load(str(path))
    rec = Records(path, WHAT)
    labelled = isinstance(loaded, datasets.DatasetDict)
    parts = dict(loaded) if labelled else {str(loaded.split) if loaded.split else "train": loaded}
    folder = options.media or (path if path.is_dir() else None)
    splits = {name: _items(rec, part, name, options, folder) for name, part in parts.items()}
    return pick_split(rec, splits, options.split, labelled)


def _items(rec: Records, part: Any, split: str, options: FormatOptions, folder: Path | None) -> list[ItemSpec]:
    import datasets

    image_col, caption_col = options.image_column or "image", options.caption_column or "caption"
    for column, option in ((image_col, "--image-column"), (caption_col, "--caption-column")):
        if column not in part.column_names:
            raise rec.fail(f"split {split} has no column {column!r} ({option}); its columns: "
                           f"{', '.join(part.column_names)}")
    feature = part.features[image_col]
    if isinstance(feature, datasets.Image):
        part = part.cast_column(image_col, datasets.Image(decode=False))  # bytes and path, not PIL images
    id_col = next((c for c in ID_COLUMNS if c in part.column_names), None)
    specs = []
    for n, row in enumerate(part.select_columns([c for c in (image_col, caption_col, id_col) if c])):
        where = f"split {split} row {n}"
        item_id = rec.ident(row[id_col], f"{where} {id_col}") if id_col else str(n)
        spec = ItemSpec(item_id, None, references=[(c, None) for c in _captions(rec, row[caption_col], where)])
        _image(rec, spec, row[image_col], where, folder)
        specs.append(spec)
    return unique_items(rec, specs, "item", f" in split {split}")


def _captions(rec: Records, value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    raise rec.fail(f"{where}: the caption column holds {type(value).__name__}, expected a string or a list of strings")


def _image(rec: Records, spec: ItemSpec, value: Any, where: str, folder: Path | None) -> None:
    """An Image feature's bytes (kept as a blob) or path, or a string path; None: no image (missing)."""
    if isinstance(value, dict) and value.get("bytes") is not None:
        spec.data = bytes(value["bytes"])
        spec.file_name = Path(value.get("path") or f"{spec.external_id}.img").name
        return
    name = value.get("path") if isinstance(value, dict) else value
    if name is None:
        return
    if not isinstance(name, str) or not name:
        raise rec.fail(f"{where}: the image column holds {type(value).__name__}, expected an Image or a file path")
    spec.file_name = name
    spec.path = Path(name) if Path(name).is_absolute() or folder is None else folder / name
