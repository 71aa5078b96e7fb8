"""open_clip scorer: any open_clip name + pretrained tag, or a local checkpoint folder.

``open_clip:ViT-B-32@openai`` loads a named config with its pretrained tag (needs the weights in
the local cache); ``open_clip:/path/dir`` loads a folder with ``open_clip_config.json`` + weights
(``local-dir:``, how the tiny test model is saved). Embeddings are L2-normalised and cached by
(model fingerprint, sha256 of image bytes or text); only misses run a forward pass.
"""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from capstore.backends.base import CallContext, ImageRef
from capstore.backends.caching import get_embeddings, put_embeddings
from capstore.backends.devices import device_name, resolve_device, resolve_dtype, timed_batches, torch_dtype
from capstore.backends.models import register_model
from capstore.backends.preflight import open_clip_name
from capstore.backends.registry import BackendSpec, register
from capstore.backends.usage import record_usage
from capstore.errors import BackendError, first_line
from capstore.store.content import sha256_text
from capstore.store.engine import Store
from capstore.store.images import decode_image

# 2: texts and images both in the declared dtype, no autocast (1 encoded texts under float16 autocast on CUDA).
IMPL = "open_clip-scorer-2"


class OpenClipScorer:
    """A CLIP/SigLIP scorer with the store's embedding cache.

    Building one is cheap (device, dtype and the weights' fingerprint, no torch): the model is
    loaded by the first call that misses the cache, so a run served from the cache loads none.
    """

    def __init__(self, spec: BackendSpec, store: Store, device: str = "auto", dtype: str | None = None,
                 batch_size: int = 256) -> None:
        self.spec, self.store, self.batch_size = spec, store, batch_size
        self.device = resolve_device(device)
        self.dtype_name = resolve_dtype(dtype, self.device, kind="scorer")
        self.local = Path(spec.model).exists()
        self.open_clip_name = open_clip_name(spec)
        weights = str(Path(spec.model).resolve()) if self.local else f"{spec.model}@{spec.tag}"
        self.model_id, self.fingerprint = register_model(
            store, kind="scorer", backend="open_clip", name=str(spec), weights=weights,
            settings={"dtype": f"torch.{self.dtype_name}", "impl": IMPL})
        self.device_name = device_name(self.device)
        self.forward_passes = 0  # batches actually computed (tests count them)
        self._loaded: tuple[Any, Any, Any] | None = None  # (model, preprocess, tokenizer)

    @property
    def dtype(self):  # type: ignore[no-untyped-def]  # -> torch.dtype
        return torch_dtype(self.dtype_name)

    @property
    def model(self):  # type: ignore[no-untyped-def]
        return self._load()[0]

    @property
    def preprocess(self):  # type: ignore[no-untyped-def]
        return self._load()[1]

    @property
    def tokenizer(self):  # type: ignore[no-untyped-def]
        return self._load()[2]

    def load(self):  # type: ignore[no-untyped-def]
        """Load the weights now instead of on the first cache miss (BackendError if they cannot be); returns self."""
        self._load()
        return self

    def _load(self) -> tuple[Any, Any, Any]:
        """Load the weights (once, on the first cache miss)."""
        if self._loaded is None:
            import open_clip

            try:
                model, _, preprocess = open_clip.create_model_and_transforms(
                    self.open_clip_name, pretrained=None if self.local else self.spec.tag, device=self.device,
                    precision=_PRECISION[self.dtype_name])
                tokenizer = open_clip.get_tokenizer(self.open_clip_name)
            except Exception as exc:  # missing weights, unknown tag: say which
                raise BackendError(f"cannot load open_clip model {self.spec}: {first_line(exc)}") from exc
            self._loaded = (model.eval(), preprocess, tokenizer)
        return self._loaded

    def encode_texts(self, texts: Sequence[str], ctx: CallContext = CallContext(), cache: bool = True) -> np.ndarray:
        shas = [sha256_text(t) for t in texts]
        return self._cached("text", shas, dict(zip(shas, texts)), self._encode_text_batch, ctx, cache)

    def encode_images(self, images: Sequence[ImageRef], ctx: CallContext = CallContext()) -> np.ndarray:
        shas = [im.sha256 for im in images]
        return self._cached("image", shas, {im.sha256: im for im in images}, self._encode_image_batch, ctx)

    def score(self, image: ImageRef, texts: Sequence[str], ctx: CallContext = CallContext()) -> np.ndarray:
        return self.encode_texts(texts, ctx) @ self.encode_images([image], ctx)[0]

    def _cached(self, kind: str, shas: list[str], content: dict[str, Any], encode, ctx: CallContext,  # type: ignore[no-untyped-def]
                cache: bool = True) -> np.ndarray:
        if not shas:
            return np.zeros((0, 0), dtype=np.float32)
        start = time.perf_counter()
        found = get_embeddings(self.store, self.model_id, kind, shas) if cache else {}
        misses = [s for s in dict.fromkeys(shas) if s not in found]
        if misses:
            loading = time.perf_counter()
            self._load()  # neither device nor wall time of this call (as when models loaded up front)
            start += time.perf_counter() - loading

        def keep(batch: list[str], vecs: Sequence[np.ndarray]) -> None:
            if cache:
                put_embeddings(self.store, self.model_id, kind, batch, vecs)
            found.update(zip(batch, vecs))

        device_seconds = timed_batches(self.device, misses, self.batch_size,
                                       lambda batch: encode([content[s] for s in batch]), keep)
        ctx.store_write(partial(
            record_usage, self.store, run_id=ctx.run_id, stage=ctx.stage or f"encode_{kind}", model_id=self.model_id,
            device_type=self.device.split(":")[0], device_name=self.device_name, device_seconds=device_seconds,
            wall_seconds=time.perf_counter() - start, images=len(misses) if kind == "image" else 0,
            items=len(set(shas)), calls=-(-len(misses) // self.batch_size), cached=len(set(shas)) - len(misses),
            worker=ctx.worker))
        return np.stack([found[s] for s in shas])

    def _encode_text_batch(self, texts: list[str]) -> np.ndarray:
        import torch

        self.forward_passes += 1
        # No autocast: open_clip casts the token embeddings to the model's precision itself, so texts
        # are encoded in the same declared dtype as images (MILS: float32 for both).
        with torch.inference_mode():
            emb = self.model.encode_text(self.tokenizer(texts).to(self.device))
        return _normalise(emb)

    def _encode_image_batch(self, images: list[ImageRef]) -> np.ndarray:
        import torch

        self.forward_passes += 1
        pixels = torch.stack([self.preprocess(decode_image(im)) for im in images]).to(self.device, self.dtype)
        with torch.inference_mode():
            emb = self.model.encode_image(pixels)
        return _normalise(emb)


def _normalise(emb) -> np.ndarray:  # type: ignore[no-untyped-def]
    emb = emb.float()
    return (emb / emb.norm(dim=-1, keepdim=True)).cpu().numpy().astype(np.float32)


# open_clip's precisions: "fp16"/"bf16" are its (and OpenAI CLIP's) mixed precision, LayerNorms in float32.
_PRECISION = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}


@register("scorer", "open_clip")
def build(spec: BackendSpec, store: Store, **options: Any) -> OpenClipScorer:
    return OpenClipScorer(spec, store, **{k: v for k, v in options.items() if k in ("device", "dtype", "batch_size")})
