"""What ``capstore dataset add`` imports: its options checked together, then the one importer they name.

Three ways in: ``--format F FILE [--media DIR]`` (the formats registry), ``--coco-captions FILE
--images DIR`` (COCO's original spelling, with its own messages) and ``--images DIR`` alone (a
folder of images without references).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from capstore.datasets.importer import ImportSummary
from capstore.errors import InputError
from capstore.store.engine import Store


class MissingInput(InputError):
    """A required argument or option is absent (the CLI shows it as a usage error, with its --help hint)."""


@dataclass(frozen=True)
class ImportPlan:
    """The importer to use: ``format`` (``fmt`` and ``file``), ``coco`` (``file``) or ``folder``."""

    way: str
    fmt: str | None
    file: Path | None
    media: Path | None


def plan_import(file: Path | None, fmt: str | None, coco_captions: Path | None, media: Path | None) -> ImportPlan:
    """Check the options together (before any store is opened); InputError for a combination that
    makes no sense, MissingInput for an absent argument or option."""
    if coco_captions is not None:
        if fmt not in (None, "coco") or file is not None:
            raise InputError("--coco-captions FILE is --format coco FILE: give one of them")
        if media is None:
            raise MissingInput("Missing option '--images' (a folder of images), or give --format F FILE [--media DIR].")
        return ImportPlan("coco", "coco", coco_captions, media)
    if fmt is None and file is not None:
        raise InputError(f"give the format of {file} with --format (coco, karpathy, nocaps, vizwiz, textcaps, "
                         "cc3m, hf, msrvtt, clotho)")
    if fmt is not None:
        if file is None:
            raise MissingInput(f"Missing argument 'FILE' (the {fmt} file to import).")
        return ImportPlan("format", fmt, file, media)
    if media is None:
        raise MissingInput("Missing option '--images' (a folder of images), or give --format F FILE [--media DIR].")
    return ImportPlan("folder", None, None, media)


def run_import(store: Store, name: str, plan: ImportPlan, *, split: str | None = None, allow_missing: bool = False,
               image_column: str | None = None, caption_column: str | None = None) -> list[ImportSummary]:
    """Import as ``plan`` says; one summary per split stored."""
    from capstore.datasets.coco import add_coco
    from capstore.datasets.folder import add_images
    from capstore.datasets.formats import add_dataset

    if plan.way == "coco":
        assert plan.file is not None and plan.media is not None
        return [add_coco(store, name, plan.file, plan.media, split or "test", allow_missing)]
    if plan.way == "format":
        assert plan.fmt is not None and plan.file is not None
        return add_dataset(store, name, plan.fmt, plan.file, media=plan.media, split=split, allow_missing=allow_missing,
                           image_column=image_column, caption_column=caption_column)
    assert plan.media is not None
    return [add_images(store, name, plan.media, split or "all")]
