"""Importing a folder of images without references (e.g. images to caption for a user study)."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from capstore.datasets.importer import ImportSummary, ItemSpec, write_split
from capstore.errors import InputError
from capstore.inputs import display, storable_path
from capstore.store.engine import Store

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


def add_images(store: Store, name: str, images_dir: str | Path, split: str = "all") -> ImportSummary:
    """Import every image under ``images_dir`` (recursively); the item id is the relative path."""
    folder = Path(images_dir)
    if not folder.is_dir():
        raise InputError(f"images folder {display(folder)} does not exist")
    source = storable_path(folder, "images folder")
    files = image_files(folder)
    if not files:
        raise InputError(f"no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) under {display(folder)}")
    specs = [ItemSpec(_item_id(p, folder), p.name, p) for p in files]
    return write_split(store, name, split, source, specs)


def image_files(folder: Path) -> list[Path]:
    """The image files under ``folder``, sorted; symlinked folders are followed, a loop is refused.

    A broken or looping symlink, or something that is not a regular file, with an image suffix is an
    InputError naming it: it is an image the user expects to be imported.
    """
    found: list[Path] = []
    stack: list[tuple[Path, frozenset[tuple[int, int]]]] = [(folder, frozenset())]
    while stack:  # depth-first without recursion: a folder may be nested thousands deep
        directory, above = stack.pop()
        st = directory.stat()
        key = (st.st_dev, st.st_ino)
        if key in above:
            raise InputError(f"images folder {display(folder)} has a symlink loop: {display(directory)} "
                             "leads back to a folder above it")
        try:
            entries = list(os.scandir(directory))
        except OSError as exc:
            raise InputError(f"cannot list {display(directory)}: {exc.strerror or exc}") from exc
        for entry in entries:
            path = Path(entry.path)
            is_image = path.suffix.lower() in IMAGE_SUFFIXES
            try:
                mode = entry.stat().st_mode  # follows symlinks
            except OSError as exc:
                if not is_image:
                    continue
                why = "a symlink loop" if exc.errno == errno.ELOOP else f"a broken symlink ({exc.strerror})"
                raise InputError(f"image file {display(path)} is {why}") from exc
            if stat.S_ISDIR(mode):
                stack.append((path, above | {key}))
            elif is_image:
                if not stat.S_ISREG(mode):
                    raise InputError(f"image file {display(path)} is not a regular file (a device, pipe or socket)")
                found.append(path)
    return sorted(found)


def _item_id(path: Path, folder: Path) -> str:
    relative = str(path.relative_to(folder))
    try:
        relative.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InputError(f"image file {display(path)} has a name that is not valid UTF-8: it cannot be stored "
                         "as the item's id; rename it") from exc
    return relative
