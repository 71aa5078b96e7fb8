"""Media by sha256: the stored bytes with their content type, and thumbnails made once and kept on disk.

A sha names its content for ever, so responses carry ``Cache-Control: immutable`` and the sha as
ETag (a browser asks once). Images are read with ``capstore.store.images.read_image`` (the store's
blob, or a recorded file whose bytes still hash to the sha), videos and audio clips with
``capstore.store.media.read_media``. Thumbnails are JPEGs of at most ``THUMB_SIZE`` pixels a side,
written once to ``thumbnail_dir()`` (atomically: a reader never sees half a file) and served from
there; the sha is still looked up in the store first, so an unknown sha is a 404 on every store.
"""

from __future__ import annotations

import io
import os
import re
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from capstore.errors import InputError
from capstore.store.engine import Store

SHA = re.compile(r"[0-9a-f]{64}")
THUMB_SIZE = 256
THUMB_QUALITY = 82
CACHE_CONTROL = "public, max-age=31536000, immutable"
THUMBNAILS_ENV = "CAPSTORE_THUMBNAILS"
# Pillow's format names and the containers capstore records, as MIME types.
CONTENT_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "GIF": "image/gif", "WEBP": "image/webp",
                 "BMP": "image/bmp", "TIFF": "image/tiff", "MPO": "image/jpeg", "ICO": "image/x-icon",
                 "mp4": "video/mp4", "mov": "video/quicktime", "matroska": "video/x-matroska", "webm": "video/webm",
                 "avi": "video/x-msvideo", "wav": "audio/wav", "flac": "audio/flac", "ogg": "audio/ogg",
                 "mp3": "audio/mpeg"}


@dataclass
class Medium:
    """What to send for a sha: its bytes or a file path, and its content type."""

    sha: str
    content_type: str
    data: bytes | None = None
    path: str | None = None


class UnknownMedium(Exception):
    """No medium with this sha in the store (or not a sha at all)."""


def thumbnail_dir() -> Path:
    """Where thumbnails are kept: ``$CAPSTORE_THUMBNAILS``, else ``thumbnails`` beside the analysis mirrors'
    cache folder (``$CAPSTORE_CACHE_DIR``, ``$XDG_CACHE_HOME/capstore``, ``~/.cache/capstore``)."""
    from capstore.analysis.mirror import cache_dir

    given = os.environ.get(THUMBNAILS_ENV)
    return Path(given).expanduser() if given else cache_dir().parent / "thumbnails"


def check_sha(sha: str) -> str:
    if not SHA.fullmatch(sha):
        raise UnknownMedium(f"{sha[:80]!r} is not a sha256")
    return sha


def medium_kind(store: Store, sha: str) -> tuple[str, str | None]:
    """(kind, format) of medium ``sha``; UnknownMedium if the store has none."""
    from capstore.store.schema import Image

    with store.read() as s:
        row = s.execute(select(Image.kind, Image.format).where(Image.sha256 == check_sha(sha))).first()
    if row is None:
        raise UnknownMedium(f"no medium {sha[:12]} in this store")
    return str(row[0] or "image"), row[1]


def read_medium(store: Store, sha: str) -> Medium:
    """The bytes (or file) of medium ``sha``; UnknownMedium if it is not in the store or not readable."""
    from capstore.store.images import read_image
    from capstore.store.media import read_media

    kind, fmt = medium_kind(store, sha)
    try:
        with store.read() as s:
            if kind == "image":
                ref = read_image(s, sha)
                return Medium(sha, _image_type(ref.data, fmt), data=ref.data)
            media = read_media(s, sha)
    except InputError as exc:  # recorded, but no copy with matching bytes: nothing to send
        raise UnknownMedium(str(exc)) from exc
    default = "video/mp4" if kind == "video" else "audio/wav"
    return Medium(sha, CONTENT_TYPES.get(fmt or "", default), data=media.data, path=media.path)


class Thumbnails:
    """Thumbnails of the store's images, each made once (per process: one maker per sha at a time)."""

    def __init__(self, store: Store, folder: Path | None = None, size: int = THUMB_SIZE) -> None:
        self.store, self.size = store, size
        self.folder = folder or thumbnail_dir()
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def path(self, sha: str) -> Path:
        return self.folder / sha[:2] / f"{sha}-{self.size}.jpg"

    def get(self, sha: str) -> Path:
        """The thumbnail file of image ``sha``, made now if it is not on disk; UnknownMedium for a sha the
        store does not hold (or not as a readable image)."""
        kind, _fmt = medium_kind(self.store, sha)
        if kind != "image":
            raise UnknownMedium(f"medium {sha[:12]} is a {kind}: no thumbnail")
        target = self.path(sha)
        if target.exists():
            return target
        with self._guard:
            lock = self._locks.setdefault(sha, threading.Lock())
        with lock:
            if not target.exists():
                self._make(sha, target)
        with self._guard:
            self._locks.pop(sha, None)
        return target

    def _make(self, sha: str, target: Path) -> None:
        from PIL import Image, UnidentifiedImageError

        medium = read_medium(self.store, sha)
        try:
            with Image.open(io.BytesIO(medium.data or b"")) as img:
                img.draft("RGB", (self.size, self.size))  # JPEG: decode at a reduced scale directly
                img = img.convert("RGB")
                img.thumbnail((self.size, self.size))
                buf = io.BytesIO()
                img.save(buf, "JPEG", quality=THUMB_QUALITY, optimize=True)
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
            raise UnknownMedium(f"image {sha[:12]} cannot be decoded: {exc}") from exc
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{sha[:12]}-", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(buf.getvalue())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def _image_type(data: bytes, fmt: str | None) -> str:
    """An image's MIME type: from the format recorded at import, else from its first bytes."""
    if fmt and fmt.upper() in CONTENT_TYPES:
        return CONTENT_TYPES[fmt.upper()]
    for magic, mime in ((b"\x89PNG", "image/png"), (b"\xff\xd8", "image/jpeg"), (b"GIF8", "image/gif"),
                        (b"BM", "image/bmp")):
        if data.startswith(magic):
            return mime
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return "application/octet-stream"
