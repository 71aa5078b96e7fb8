"""CLIPScore and RefCLIPScore (Hessel et al., EMNLP 2021), through a scorer backend and its caches.

Following the paper and its code (jmhessel/clipscore): every text is encoded with the prefix
"A photo depicts " (candidate and references alike, as their ``extract_all_captions`` does), and
with c, v, r the L2-normalised caption, image and reference embeddings:

    CLIPScore    = 2.5 · max(cos(c, v), 0)
    RefCLIPScore = H-mean(CLIPScore, max(max_r cos(c, r), 0))   (0 when both are 0)

per image; the corpus value is the mean over images. Embeddings go through the scorer backend, so
they are cached in the store and their usage recorded (stage ``eval``, no run: not the method's cost).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

PREFIX = "A photo depicts "
WEIGHT = 2.5
FORMULA = ("CLIPScore = 2.5*max(cos(image, caption), 0); RefCLIPScore = harmonic mean of CLIPScore and "
           "max(max over references of cos(caption, reference), 0); texts prefixed 'A photo depicts '")
BATCH = 256


@dataclass
class ClipScores:
    clip: list[float]  # per image given
    ref: list[float | None]  # per image given; None where the image has no reference


def resolve_spec(spec: str) -> str:
    """A local checkpoint folder as its absolute path (so the same folder is one scorer), else as given."""
    from pathlib import Path

    backend, sep, model = spec.partition(":")
    if sep and Path(model).exists():
        return f"{backend}:{Path(model).resolve()}"
    return spec


def weights_identity(spec: str) -> str:
    """What the scorer's fingerprint is made of, cheaply (no model load): the weights' sha."""
    from capstore.backends.models import weights_sha
    from capstore.backends.registry import parse_spec

    parsed = parse_spec("scorer", spec)
    return weights_sha(parsed.model if not parsed.tag else f"{parsed.model}@{parsed.tag}")


@contextmanager
def _hub_offline() -> Iterator[None]:
    """No Hugging Face hub requests while a scorer loads: missing weights fail at once instead of
    after a minute of retries (capstore never downloads)."""
    try:
        from huggingface_hub import constants
    except ImportError:
        yield
        return
    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before


def load_scorer(spec: str, store: Any, device: str = "auto") -> Any:
    """The scorer backend for ``spec`` (CapstoreError, one line, when it cannot be loaded)."""
    import logging

    from capstore.backends.registry import load_backend

    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.CRITICAL)  # open_clip logs the failed download as an ERROR before raising
    try:
        with _hub_offline():
            # Backends load their weights on their first cache miss; load here, offline, so that
            # weights that are not on this machine fail in this one line.
            return load_backend("scorer", spec, store, device=device).load()
    finally:
        logger.setLevel(level)


def load_failure(exc: Exception) -> str:
    """Why a scorer did not load, in a few words (the backends' messages can run to paragraphs)."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if "Failed to download" in text or "local cache" in text:
        return "its weights are not on this machine and capstore never downloads"
    return text if len(text) <= 160 else text[:157] + "..."


def clip_scores(scorer: Any, images: Sequence[Any], captions: Sequence[str],
                refs: Sequence[Sequence[str]], progress: bool = False) -> ClipScores:
    """Per-image CLIPScore and RefCLIPScore of ``captions[i]`` for ``images[i]`` with ``refs[i]``."""
    import numpy as np
    from tqdm import tqdm

    from capstore.backends.base import CallContext

    # No run id: evaluating is not part of what the run's method cost (cost queries sum a run's events).
    ctx = CallContext(run_id=None, stage="eval")
    n = len(images)
    img = np.zeros((n, 0))
    cap = np.zeros((n, 0))
    flat = [PREFIX + r for rs in refs for r in rs]
    ref_emb = np.zeros((0, 0))
    with tqdm(total=2 * n + len(flat), desc="CLIPScore embeddings", unit="emb", disable=not progress) as bar:
        img_parts, cap_parts, ref_parts = [], [], []
        for start in range(0, n, BATCH):
            img_parts.append(scorer.encode_images(images[start : start + BATCH], ctx))
            cap_parts.append(scorer.encode_texts([PREFIX + c for c in captions[start : start + BATCH]], ctx))
            bar.update(len(img_parts[-1]) + len(cap_parts[-1]))
        for start in range(0, len(flat), BATCH):
            ref_parts.append(scorer.encode_texts(flat[start : start + BATCH], ctx))
            bar.update(len(ref_parts[-1]))
    if n:
        img, cap = _unit(np.vstack(img_parts)), _unit(np.vstack(cap_parts))
    if flat:
        ref_emb = _unit(np.vstack(ref_parts))
    clip = WEIGHT * np.clip(np.sum(img * cap, axis=1), 0, None) if n else np.zeros(0)
    out_ref: list[float | None] = []
    start = 0
    for i, rs in enumerate(refs):
        if not rs:
            out_ref.append(None)
            continue
        text = max(float(np.max(ref_emb[start : start + len(rs)] @ cap[i])), 0.0)
        start += len(rs)
        a = float(clip[i])
        out_ref.append(2 * a * text / (a + text) if a + text > 0 else 0.0)
    return ClipScores(clip=[float(v) for v in clip], ref=out_ref)


def _unit(x):  # type: ignore[no-untyped-def]
    """Rows scaled to unit length in float64 (the backend's float32 unit vectors, made exact)."""
    import numpy as np

    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)
