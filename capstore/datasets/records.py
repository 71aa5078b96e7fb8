"""Reading the records of an annotation file: one-line errors naming the file, the record and the key.

Shared by the format modules (``coco``, ``karpathy``, ``nocaps``…): a record without a key, a value
of the wrong type and an id that is neither an integer nor a string are InputErrors such as
``nocaps_val.json: not nocaps captions: images[3] has no 'domain'``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from capstore.datasets.importer import ItemSpec
from capstore.errors import InputError
from capstore.inputs import brief, display


@dataclass(frozen=True)
class FormatOptions:
    """What ``capstore dataset add`` passes to a format's ``parse``."""

    media: Path | None = None  # the folder of the media files (--media / --images)
    split: str | None = None  # --split: the split to import (files with several) or its name
    image_column: str | None = None  # --format hf
    caption_column: str | None = None  # --format hf


class Records:
    """Checks for the records of one file; ``what`` names the format in messages ("nocaps captions")."""

    def __init__(self, path: Path, what: str) -> None:
        self.path, self.what = path, what

    def fail(self, message: str) -> InputError:
        return InputError(f"{display(self.path)}: {message}")

    def require(self, obj: Any, key: str, where: str) -> Any:
        """``obj[key]``; an InputError if ``obj`` is not an object or lacks ``key``."""
        if not isinstance(obj, dict) or key not in obj:
            raise self.fail(f"not {self.what}: {where} has no {key!r}")
        return obj[key]

    def list_of(self, obj: Any, key: str, where: str = "the top level") -> list[Any]:
        value = self.require(obj, key, where)
        if not isinstance(value, list):
            raise self.fail(f"not {self.what}: {_join(where, key)} is not a list")
        return value

    def text(self, value: Any, where: str, empty: bool = False) -> str:
        """A string (non-empty unless ``empty``)."""
        if not isinstance(value, str) or (not empty and not value):
            raise self.fail(f"{where} is not a {'string' if empty else 'non-empty string'}: {brief(value)}")
        return value

    def ident(self, value: Any, where: str) -> str:
        """An id as text: an integer or a non-empty string (not a float, a list, true or null)."""
        if isinstance(value, bool) or not isinstance(value, (int, str)) or value == "":
            raise self.fail(f"not {self.what}: {where} is {brief(value)}, expected an integer or a string")
        return str(value)

    def flag(self, value: Any, where: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(f"{where} is {brief(value)}, expected true or false")
        return value


def _join(where: str, key: str) -> str:
    return key if where == "the top level" else f"{where}.{key}"


def resolve_media(records: Records, folder: Path, *names: str) -> Path:
    """The first of ``folder/name`` that exists (names may hold sub-folders), else the first candidate;
    a name that leaves ``folder`` is an InputError naming the annotation file."""
    candidates = [media_path(records, folder, n) for n in names if n]
    for candidate in candidates:
        if candidate.exists():
            return candidate
    return candidates[0]


def media_path(records: Records, folder: Path, name: str) -> Path:
    """``folder/name``, refusing a name from the annotation file that leads out of ``folder``
    (``../../x``, an absolute path). Decided on the names, not on symlinks: a link the user put in
    the media folder is theirs to follow."""
    base = os.path.normpath(folder.absolute())
    target = os.path.normpath((folder / name).absolute())
    if os.path.commonpath([base, target]) != base:
        raise records.fail(f"media file name {brief(name)} leads out of the media folder {display(folder)}")
    return folder / name


def unique_items(records: Records, specs: Iterable[ItemSpec], what: str = "item", within: str = "") -> list[ItemSpec]:
    """``specs`` in order; an InputError when two share an external id (``within``: " in split test")."""
    seen: dict[str, ItemSpec] = {}
    for spec in specs:
        if spec.external_id in seen:
            raise records.fail(f"{what} {spec.external_id} appears twice{within}")
        seen[spec.external_id] = spec
    return list(seen.values())


def split_from_name(path: Path, known: dict[str, str], default: str) -> str:
    """A split name read from the file's name (``captions_development.csv`` -> ``development``)."""
    name = path.name.lower()
    for word, split in known.items():
        if word in name:
            return split
    return default


def pick_split(records: Records, splits: dict[str, list[ItemSpec]], wanted: str | None,
               labelled: bool) -> dict[str, list[ItemSpec]]:
    """Apply ``--split``: select it among the file's own splits (``labelled``), or name the only one."""
    if not any(splits.values()):
        raise records.fail(f"holds no items ({records.what})")
    if wanted is None:
        return splits
    if labelled:
        if wanted not in splits:
            raise records.fail(f"has no split {wanted!r}; it has {', '.join(sorted(splits))}")
        return {wanted: splits[wanted]}
    (only,) = splits.values()
    return {wanted: only}
