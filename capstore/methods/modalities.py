"""The media a method works on: how a worker loads an item's medium and has the scorer embed it.

- image: read by sha (blob or file whose bytes still hash right) and decoded at load, so a corrupt
  image fails its item there; embedded by the scorer's ``encode_images``.
- video, audio: read by path, size and sha256 at load (a file changed since import fails its item);
  decoded by the scorer only on an embedding-cache miss (``encode_media``), where a medium that
  cannot be decoded fails its own item with an error row and the batch goes on.

Which scorer backends embed which kind is ``SCORER_MEDIA``; ``check_media`` refuses, before a run
exists, a method or scorer that cannot take the split's media.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from capstore.backends.base import CallContext
from capstore.errors import CapstoreError, InputError
from capstore.methods.registry import method_spec
from capstore.store.media import describe_kind
from capstore.store.schema import Image, Item

SCORER_MEDIA = {"open_clip": "image", "open_clip-frames": "video", "xclip": "video", "clap": "audio"}


def load_medium(session: Session, sha: str, kind: str) -> Any:
    """The checked medium ``sha`` of ``kind`` (an ImageRef or a MediaRef); InputError if unusable."""
    ref = load_media(session, [(sha, kind)])[0]
    if isinstance(ref, CapstoreError):
        raise ref
    return ref


def load_media(session: Session, media: Sequence[tuple[str, str]]) -> list[Any]:
    """``load_medium`` of each (sha, kind) of ``media``, in order, with an unusable one's error (a
    CapstoreError) in its place; images' blobs are read in one query (a batch of claimed items)."""
    from capstore.store.images import decode_image, read_images
    from capstore.store.media import read_media

    images = read_images(session, [sha for sha, kind in media if kind == "image"])
    out: list[Any] = []
    for sha, kind in media:
        try:
            if kind != "image":
                out.append(read_media(session, sha))
                continue
            ref = images[sha]
            if isinstance(ref, InputError):
                raise ref
            decode_image(ref)
            out.append(ref)
        except CapstoreError as exc:
            out.append(exc)
    return out


def embed_media(scorer: Any, refs: Sequence[Any], ctx: CallContext) -> tuple[np.ndarray, dict[str, str]]:
    """Embeddings of ``refs`` (one row each) and the media that could not be decoded (sha -> message;
    their rows are zeros). Image scorers decode nothing here: images were checked at load."""
    if hasattr(scorer, "encode_media"):
        return scorer.encode_media(refs, ctx)
    return scorer.encode_images(refs, ctx), {}


def split_media(session: Session, split_id: int) -> list[str]:
    """The kinds of media the split's items hold (items without a medium aside), sorted."""
    return sorted(session.scalars(select(Image.kind).distinct().join(Item, Item.image_sha == Image.sha256)
                                  .where(Item.split_id == split_id)).all())


def check_media(session: Session, method: str, scorer: str | None, split_id: int, where: str) -> str:
    """The kind of media of split ``where`` (dataset/split), checked against the method and its scorer;
    one-line InputError if they cannot take it."""
    kinds = split_media(session, split_id) or ["image"]
    if len(kinds) > 1:
        raise InputError(f"dataset {where} mixes {' and '.join(describe_kind(k) for k in kinds)}; "
                         "a run takes one kind of media")
    kind = kinds[0]
    spec = method_spec(method)
    if kind not in spec.media:
        raise InputError(f"--method {method} captions {' and '.join(describe_kind(k) for k in spec.media)}; "
                         f"dataset {where} holds {describe_kind(kind)} (--method mils takes them)")
    backend = (scorer or "").partition(":")[0]
    if backend in SCORER_MEDIA and SCORER_MEDIA[backend] != kind:
        fitting = ", ".join(f"{b}:NAME" for b, k in SCORER_MEDIA.items() if k == kind)
        raise InputError(f"--scorer {scorer} scores {describe_kind(SCORER_MEDIA[backend])}; dataset {where} holds "
                         f"{describe_kind(kind)}: use {fitting}")
    return kind
