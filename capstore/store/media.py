"""Videos and audio clips: recognised by their first bytes, read back by sha256, decoded for a scorer.

Large media are kept by path + sha256 + size (``image_files`` and ``images``), never as blobs: a
worker reads the file, checks its size, then its sha256 (hashed in 1 MiB chunks), so a file changed
under the same path is never taken for the medium it replaced. They are not decoded at import (a
10,000-video dataset would take hours): a file whose first bytes are no known container is refused
there, and one that cannot be decoded fails its item in the run with an error row.

Decoding: PyAV for video (``video_frames``: K frames at the centres of K equal segments), soundfile
for audio (``audio_waveform``: mono float32, resampled with soxr to the rate the model expects).
"""

from __future__ import annotations

import io
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from capstore.errors import InputError, first_line
from capstore.inputs import display
from capstore.store.schema import Image, ImageBlob, ImageFile

VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".mov", ".webm", ".mkv", ".avi"})
AUDIO_SUFFIXES = frozenset({".wav", ".flac", ".ogg", ".oga", ".mp3"})
_CHUNK = 1 << 20


@dataclass(frozen=True)
class MediaRef:
    """A video or audio clip known to the store: its sha256, kind and where its checked bytes are."""

    sha256: str
    kind: str  # "video" | "audio"
    path: str | None = None  # a file whose bytes hashed to sha256 when read
    data: bytes | None = None  # or the bytes themselves (a blob)

    @property
    def name(self) -> str:
        return Path(self.path).name if self.path else self.sha256[:12]

    def open(self) -> BinaryIO | str:
        """What PyAV and soundfile read: the path, or the bytes as a file object."""
        return self.path if self.path is not None else io.BytesIO(self.data or b"")


def media_kind(path: Path) -> str | None:
    """``video`` or ``audio`` by the file's suffix, else None."""
    suffix = path.suffix.lower()
    return "video" if suffix in VIDEO_SUFFIXES else "audio" if suffix in AUDIO_SUFFIXES else None


def container_format(head: bytes) -> str | None:
    """The container named by a file's first 16 bytes (mp4, matroska, avi, wav, flac, ogg, mp3), or None."""
    if head[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide"):
        return "mp4"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "matroska"
    if head.startswith((b"RIFF", b"RF64")) and head[8:12] == b"AVI ":
        return "avi"
    if head.startswith((b"RIFF", b"RF64")) and head[8:12] == b"WAVE":
        return "wav"
    if head.startswith(b"fLaC"):
        return "flac"
    if head.startswith(b"OggS"):
        return "ogg"
    if head.startswith(b"ID3") or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        return "mp3"
    return None


_FORMATS_OF = {"video": ("mp4", "matroska", "avi"), "audio": ("wav", "flac", "ogg", "mp3", "mp4")}


@dataclass
class MediaInfo:
    """What an import learns of a video or audio file without decoding it."""

    sha: str
    size: int
    format: str
    width: int | None = None
    height: int | None = None
    duration: float | None = None


def inspect_media(path: Path, kind: str) -> MediaInfo:
    """Hash a video or audio file (streamed), check its container by its first bytes, probe its header.

    A file that is not a regular file, is empty or is no known container of ``kind`` is an
    InputError naming it; a header that cannot be probed only leaves width, height and duration unset.
    """
    import hashlib

    where = display(path)
    try:
        st = path.stat()
    except OSError as exc:
        raise InputError(f"cannot read {kind} file {where}: {exc.strerror or exc}") from exc
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"cannot read {kind} file {where}: not a regular file")
    if st.st_size == 0:
        raise InputError(f"{kind} file {where} is empty (0 bytes)")
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            head = f.read(16)
            digest.update(head)
            for chunk in iter(lambda: f.read(_CHUNK), b""):
                digest.update(chunk)
    except OSError as exc:
        raise InputError(f"cannot read {kind} file {where}: {exc.strerror or exc}") from exc
    fmt = container_format(head)
    if fmt not in _FORMATS_OF[kind]:
        known = ", ".join(_FORMATS_OF[kind])
        raise InputError(f"{kind} file {where} is not a {kind} file (its first bytes are none of {known})")
    info = MediaInfo(digest.hexdigest(), st.st_size, fmt)
    _probe(path, kind, info)
    return info


def _probe(path: Path, kind: str, info: MediaInfo) -> None:
    """Width, height and duration from the container's header, when it can be read (best effort)."""
    try:
        if kind == "audio":
            import soundfile

            found = soundfile.info(str(path))
            info.duration = float(found.duration) if found.samplerate else None
            return
        import av

        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            info.width, info.height = stream.codec_context.width or None, stream.codec_context.height or None
            if container.duration is not None:
                info.duration = container.duration / 1_000_000  # av.time_base
    except Exception:  # the run decodes it, and fails the item in one line if it cannot
        return


def read_media(session: Session, sha: str) -> MediaRef:
    """The video or audio clip ``sha``: its blob, or the first recorded file of the right size whose bytes
    still hash to ``sha``; InputError naming the medium and its paths otherwise."""
    row = session.get(Image, sha)
    if row is None:
        raise InputError(f"medium {sha[:12]} is not in the store")
    blob = session.get(ImageBlob, sha)
    if blob is not None:
        return MediaRef(sha, row.kind, data=bytes(blob.data))
    paths = session.execute(select(ImageFile.path).where(ImageFile.image_sha == sha)).scalars().all()
    reasons = []
    for path in paths:
        try:
            size = os.stat(path).st_size
        except OSError as exc:
            reasons.append(f"{path}: {exc.strerror or exc}")
            continue
        if size != row.size_bytes:  # changed without reading it: a size the medium never had
            reasons.append(f"{path}: {size} bytes, not {row.size_bytes} (changed since import)")
            continue
        try:
            same = _file_sha(path) == sha
        except OSError as exc:  # unreadable (permissions, a folder now, removed meanwhile): this item fails, not the worker
            reasons.append(f"{path}: {exc.strerror or exc}")
            continue
        if same:
            return MediaRef(sha, row.kind, path=path)
        reasons.append(f"{path}: its bytes changed since import (another sha256)")
    where = "; ".join(reasons) if reasons else "no file recorded"
    raise InputError(f"{row.kind} {sha[:12]} is not readable with matching bytes ({where})"[:600])


def _file_sha(path: str) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def segment_centres(total: int, count: int) -> list[int]:
    """``count`` frame indices of ``total``: the centre of each of ``count`` equal segments (repeats
    when the video has fewer frames than asked)."""
    return [min(total - 1, int((k + 0.5) * total / count)) for k in range(count)]


def video_frames(ref: MediaRef, count: int) -> np.ndarray:
    """``count`` RGB frames (count, H, W, 3) uint8, sampled uniformly (segment centres) over the video.

    The frame count comes from the container when it declares one, else from a first decoding pass.
    A video that cannot be opened or decoded, has no video stream, or ends before the frames its
    header declares (cut short) is an InputError naming it.
    """
    import av

    try:
        with av.open(ref.open()) as container:
            if not container.streams.video:
                raise InputError(f"video {ref.name} has no video stream to decode (cut short, or not a video?)")
            declared = container.streams.video[0].frames or 0
            total = declared or sum(1 for _ in container.decode(video=0))
            if total == 0:
                raise InputError(f"video {ref.name} has no frames")
            if not declared:
                container.seek(0)
            wanted = segment_centres(total, count)
            picked: dict[int, np.ndarray] = {}
            last = max(wanted)
            decoded = 0
            for index, frame in enumerate(container.decode(video=0)):
                decoded = index + 1
                if index in wanted:
                    picked[index] = frame.to_ndarray(format="rgb24")
                if index >= last:
                    break
    except InputError:
        raise
    except (av.FFmpegError, OSError, ValueError, IndexError) as exc:
        raise InputError(f"video {ref.name} cannot be decoded ({first_line(exc, 200, named=True)})") from exc
    if decoded <= last:
        raise InputError(f"video {ref.name} ends after {decoded} of the {total} frames its header declares (cut short?)")
    return np.stack([picked[i] for i in wanted])


def audio_waveform(ref: MediaRef, sample_rate: int) -> np.ndarray:
    """The clip as mono float32 samples at ``sample_rate`` (channels averaged; resampled with soxr).

    A file soundfile cannot read (a wrong header, a cut), or without samples, is an InputError naming it.
    """
    import soundfile
    import soxr

    try:
        samples, rate = soundfile.read(ref.open(), dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, ValueError, TypeError, OSError) as exc:
        raise InputError(f"audio clip {ref.name} cannot be decoded ({first_line(exc, 200, named=True)})") from exc
    if samples.size == 0:
        raise InputError(f"audio clip {ref.name} has no samples")
    mono = samples.mean(axis=1)
    if rate != sample_rate:
        mono = soxr.resample(mono, rate, sample_rate, quality="HQ")
    return np.ascontiguousarray(mono, dtype=np.float32)




def describe_kind(kind: str) -> str:
    """``video`` -> ``videos`` (for messages)."""
    return {"image": "images", "video": "videos", "audio": "audio clips"}.get(kind, kind)

