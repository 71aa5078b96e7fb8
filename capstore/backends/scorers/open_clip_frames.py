"""``open_clip-frames:NAME@TAG``: a video scorer from any open_clip image model.

A video's embedding is the mean of the L2-normalised embeddings of ``FRAMES`` frames sampled
uniformly (the centres of equal segments, decoded with PyAV), normalised again so that a score is a
cosine. Texts are embedded by the same model as ``open_clip:NAME@TAG`` and share its text cache: a
pool encoded for an image run is not encoded again for a video run. The frame count and sampling
are part of the model's fingerprint, so the video embeddings' cache key holds them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from capstore.backends.base import CallContext
from capstore.backends.models import register_model
from capstore.backends.registry import BackendSpec, register
from capstore.backends.scorers.media_scorer import MediaScorer, normalise
from capstore.backends.scorers.open_clip import OpenClipScorer
from capstore.store.engine import Store
from capstore.store.media import MediaRef, video_frames

IMPL = "open_clip-frames-1"
FRAMES = 8


class OpenClipFramesScorer(MediaScorer):
    """Mean of an open_clip model's frame embeddings; texts through the open_clip scorer of that model."""

    modality = "video"

    def __init__(self, spec: BackendSpec, store: Store, device: str = "auto", dtype: str | None = None,
                 batch_size: int = 8, frames: int = FRAMES) -> None:
        self.frames = frames
        self.clip = OpenClipScorer(BackendSpec("scorer", "open_clip", spec.model, spec.tag), store, device=device,
                                   dtype=dtype)  # checks the name; loads nothing
        super().__init__(spec, store, device=device, dtype=dtype, batch_size=batch_size)

    def _register(self) -> tuple[int, str]:
        weights = str(Path(self.spec.model).resolve()) if self.clip.local else f"{self.spec.model}@{self.spec.tag}"
        return register_model(self.store, kind="scorer", backend="open_clip-frames", name=str(self.spec),
                              weights=weights, settings={"dtype": f"torch.{self.dtype_name}", "impl": IMPL,
                                                         "frames": self.frames, "sampling": "segment-centres",
                                                         "pooling": "mean-of-normalised"})

    def encode_texts(self, texts: Sequence[str], ctx: CallContext = CallContext(), cache: bool = True) -> np.ndarray:
        return self.clip.encode_texts(texts, ctx, cache)

    def _load_model(self) -> Any:
        return self.clip.load()

    def _decode(self, ref: MediaRef) -> np.ndarray:
        return video_frames(ref, self.frames)

    def _media_batch(self, decoded: list[np.ndarray]) -> np.ndarray:
        import torch
        from PIL import Image

        self.forward_passes += 1
        pixels = torch.stack([self.clip.preprocess(Image.fromarray(frame)) for frames in decoded for frame in frames])
        with torch.inference_mode():
            emb = self.clip.model.encode_image(pixels.to(self.device, self.clip.dtype)).float()
        emb = emb / emb.norm(dim=-1, keepdim=True)
        return normalise(emb.view(len(decoded), self.frames, -1).mean(dim=1))


@register("scorer", "open_clip-frames")
def build(spec: BackendSpec, store: Store, **options: Any) -> OpenClipFramesScorer:
    return OpenClipFramesScorer(spec, store, **{k: v for k, v in options.items() if k in ("device", "dtype", "batch_size")})
