"""Reading an image's bytes back by its sha256: from the store's blobs or from the files it was seen at.

Bytes read from a file are hashed again, so a file changed on disk is never taken for the image.
Videos and audio clips share the ``images`` table and are read by ``capstore.store.media``: asked
for as an image, one is refused before its (possibly large) file is read.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from capstore.backends.base import ImageRef
from capstore.errors import InputError
from capstore.store.content import sha256_bytes
from capstore.store.schema import Image, ImageBlob, ImageFile

_SHAS_PER_QUERY = 10_000


def read_image(session: Session, sha: str) -> ImageRef:
    """The bytes of image ``sha``; InputError naming the image if no readable, matching copy exists
    (or if ``sha`` is a video or an audio clip)."""
    kind = session.scalar(select(Image.kind).where(Image.sha256 == sha))
    if kind is not None and kind != "image":
        raise InputError(f"medium {sha[:12]} is a {kind}, not an image")
    blob = session.get(ImageBlob, sha)
    if blob is not None:
        return ImageRef(sha256=sha, data=bytes(blob.data))
    paths = session.execute(select(ImageFile.path).where(ImageFile.image_sha == sha)).scalars().all()
    for path in paths:
        try:
            data = Path(path).read_bytes()
        except OSError:
            continue
        if sha256_bytes(data) == sha:
            return ImageRef(sha256=sha, data=data)
    where = ", ".join(paths) if paths else "no file recorded"
    raise InputError(f"image {sha[:12]} is not readable with matching bytes ({where})")


def read_images(session: Session, shas: Sequence[str]) -> dict[str, ImageRef | InputError]:
    """``read_image`` of each of ``shas`` (images): the store's blobs in one query, the others from
    their files; an unreadable one maps to its InputError."""
    wanted = list(dict.fromkeys(shas))
    out: dict[str, ImageRef | InputError] = {}
    for start in range(0, len(wanted), _SHAS_PER_QUERY):
        part = wanted[start:start + _SHAS_PER_QUERY]
        rows = session.execute(select(ImageBlob.image_sha, ImageBlob.data).where(ImageBlob.image_sha.in_(part)))
        out.update((sha, ImageRef(sha256=sha, data=bytes(data))) for sha, data in rows)
    for sha in wanted:
        if sha not in out:
            try:
                out[sha] = read_image(session, sha)
            except InputError as exc:
                out[sha] = exc
    return out


def decode_image(ref: ImageRef, name: str | None = None):  # -> PIL.Image.Image
    """Decode ``ref`` to an RGB PIL image; InputError naming the image if it is not a valid image."""
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(io.BytesIO(ref.data))
        img.load()
        return img.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise InputError(f"image {name or ref.sha256[:12]} is not a readable image: {exc}") from exc
