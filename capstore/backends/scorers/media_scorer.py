"""What the video and audio scorers share: the embedding cache, per-item decoding, batching, usage events.

A media scorer embeds texts and media into one space; scores are cosines of L2-normalised
embeddings, so MILS's loop (one matrix product against the pool, cached text embeddings) is the same
as for images. Media are embedded with ``encode_media(refs, ctx) -> (rows, failed)``: cached
embeddings (keyed by the model's fingerprint, which holds the frame or clip sampling settings, and
the medium's sha256) are read back; the misses are decoded one by one outside the timed region (a
medium that cannot be decoded lands in ``failed`` with a one-line message, its row zeros, and the
others go on), then encoded in batches. The model loads on the first miss, so a run served from the
caches loads none.
"""

from __future__ import annotations

import time
from functools import partial
from typing import Any, Callable, Sequence

import numpy as np

from capstore.backends.base import CallContext
from capstore.backends.caching import get_embeddings, put_embeddings
from capstore.backends.devices import device_name, resolve_device, resolve_dtype, timed_batches, torch_dtype
from capstore.backends.registry import BackendSpec
from capstore.backends.usage import record_usage
from capstore.errors import InputError
from capstore.store.content import sha256_text
from capstore.store.engine import Store
from capstore.store.media import MediaRef


class MediaScorer:
    """Base of the ``xclip``, ``open_clip-frames`` and ``clap`` scorers (subclasses set ``modality``
    and implement ``_load_model``, ``_decode``, ``_media_batch`` and ``_text_batch``)."""

    modality = ""  # "video" | "audio": the embedding cache's content kind of its media

    def __init__(self, spec: BackendSpec, store: Store, device: str = "auto", dtype: str | None = None,
                 batch_size: int = 8, text_batch_size: int = 256) -> None:
        self.spec, self.store = spec, store
        self.batch_size, self.text_batch_size = batch_size, text_batch_size
        self.device = resolve_device(device)
        self.dtype_name = resolve_dtype(dtype, self.device, kind="scorer")
        self.device_name = device_name(self.device)
        self.forward_passes = 0  # batches actually computed (tests count them)
        self._model: Any = None
        self.model_id, self.fingerprint = self._register()

    def _register(self) -> tuple[int, str]:
        raise NotImplementedError

    @property
    def dtype(self):  # type: ignore[no-untyped-def]  # -> torch.dtype
        return torch_dtype(self.dtype_name)

    def load(self):  # type: ignore[no-untyped-def]
        """Load the weights now instead of on the first cache miss (BackendError if they cannot be); returns self."""
        self._loaded()
        return self

    def _loaded(self) -> Any:
        if self._model is None:
            self._model = self._load_model()
        return self._model

    # -- what a subclass provides ---------------------------------------------------------------

    def _load_model(self) -> Any:
        raise NotImplementedError

    def _decode(self, ref: MediaRef) -> Any:
        """The model's raw input for one medium (frames, samples); InputError if it cannot be decoded."""
        raise NotImplementedError

    def _media_batch(self, decoded: list[Any]) -> np.ndarray:
        raise NotImplementedError

    def _text_batch(self, texts: list[str]) -> np.ndarray:
        raise NotImplementedError

    # -- the Scorer contract --------------------------------------------------------------------

    def encode_texts(self, texts: Sequence[str], ctx: CallContext = CallContext(), cache: bool = True) -> np.ndarray:
        """L2-normalised float32 embeddings, one row per text (cached by text sha unless ``cache=False``)."""
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        shas = [sha256_text(t) for t in texts]
        content = dict(zip(shas, texts))
        found, _ = self._cached("text", shas, lambda batch: [content[s] for s in batch], self._text_batch,
                                self.text_batch_size, ctx, cache=cache)
        return np.stack([found[s] for s in shas])

    def encode_media(self, media: Sequence[MediaRef], ctx: CallContext = CallContext()) -> tuple[np.ndarray, dict[str, str]]:
        """L2-normalised float32 embeddings, one row per medium (cached by its sha256), and the media
        that could not be decoded (sha -> message; their rows are zeros)."""
        if not media:
            return np.zeros((0, 0), dtype=np.float32), {}
        by_sha = {m.sha256: m for m in media}
        found, failed = self._cached(self.modality, [m.sha256 for m in media], None, self._media_batch,
                                     self.batch_size, ctx, decode=lambda sha: self._decode(by_sha[sha]))
        dim = next((len(v) for v in found.values()), 1)
        zeros = np.zeros(dim, dtype=np.float32)
        return np.stack([found.get(m.sha256, zeros) for m in media]), failed

    def score(self, medium: MediaRef, texts: Sequence[str], ctx: CallContext = CallContext()) -> np.ndarray:
        """Cosine similarity of the medium with each text (InputError if it cannot be decoded)."""
        rows, failed = self.encode_media([medium], ctx)
        if failed:
            raise InputError(failed[medium.sha256])
        return self.encode_texts(texts, ctx) @ rows[0]

    # -- caching and accounting -----------------------------------------------------------------

    def _cached(self, kind: str, shas: list[str], content: Callable[[list[str]], list[Any]] | None,
                encode: Callable[[list[Any]], np.ndarray], batch_size: int, ctx: CallContext,
                decode: Callable[[str], Any] | None = None, cache: bool = True,
                ) -> tuple[dict[str, np.ndarray], dict[str, str]]:
        """Cached rows of ``shas``; misses computed in batches (decoded first, untimed) and stored
        (``cache=False``: all computed, nothing stored)."""
        start = time.perf_counter()
        found = get_embeddings(self.store, self.model_id, kind, shas) if cache else {}
        misses = [s for s in dict.fromkeys(shas) if s not in found]
        failed: dict[str, str] = {}
        device_seconds, calls = 0.0, 0

        def keep(batch: list[str], vecs: Sequence[np.ndarray]) -> None:
            if cache:
                put_embeddings(self.store, self.model_id, kind, batch, np.asarray(vecs))
            found.update(zip(batch, vecs))

        for first in range(0, len(misses), batch_size):
            chunk = misses[first : first + batch_size]
            if decode is not None:  # media: decode each, a bad one fails alone (not device time)
                ready: dict[str, Any] = {}
                for sha in chunk:
                    try:
                        ready[sha] = decode(sha)
                    except InputError as exc:
                        failed[sha] = str(exc)
                chunk, inputs = list(ready), ready
            else:
                inputs = dict(zip(chunk, content(chunk)))  # type: ignore[misc]
            if not chunk:
                continue
            loading = time.perf_counter()
            self._loaded()  # neither device nor wall time of this call
            start += time.perf_counter() - loading
            device_seconds += timed_batches(self.device, chunk, batch_size,
                                            lambda batch: encode([inputs[s] for s in batch]), keep)
            calls += 1  # a chunk is one batch
        unique = len(set(shas))
        ctx.store_write(partial(
            record_usage, self.store, run_id=ctx.run_id, stage=ctx.stage or f"encode_{kind}", model_id=self.model_id,
            device_type=self.device.split(":")[0], device_name=self.device_name, device_seconds=device_seconds,
            wall_seconds=time.perf_counter() - start, items=unique, calls=calls, cached=unique - len(misses),
            worker=ctx.worker))
        return found, failed


def normalise(emb: Any) -> np.ndarray:
    """Rows of a torch tensor (or a transformers output's ``pooler_output``) L2-normalised, as float32 numpy."""
    if not hasattr(emb, "norm"):  # transformers 5 returns a BaseModelOutputWithPooling
        emb = emb.pooler_output
    emb = emb.float()
    return (emb / emb.norm(dim=-1, keepdim=True)).cpu().numpy().astype(np.float32)
