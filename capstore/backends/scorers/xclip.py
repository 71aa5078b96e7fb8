"""``xclip:NAME-or-folder``: transformers' X-CLIP as a video scorer (e.g. ``microsoft/xclip-base-patch32``).

A video is ``num_frames`` frames (the model's own count, 8 for the base models) sampled uniformly
(segment centres, decoded with PyAV), preprocessed by the model's image processor and embedded with
``get_video_features`` (frame encoder + multi-frame integration transformer); a text with
``get_text_features``. The score is the cosine of the two. X-CLIP's video-specific prompt generator,
which moves each text's embedding towards each video in its own forward pass, is not applied: with
it no text embedding could be cached and MILS's pool would be a forward pass per (video, line).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from capstore.backends.models import register_model, weights_location
from capstore.backends.preflight import check_weights_source
from capstore.backends.registry import BackendSpec, register
from capstore.backends.scorers.media_scorer import MediaScorer, normalise
from capstore.errors import BackendError, first_line
from capstore.store.engine import Store
from capstore.store.media import MediaRef, video_frames

IMPL = "xclip-scorer-1"
DEFAULT_FRAMES = 8  # XCLIPVisionConfig's default


def model_frames(location: str) -> int:
    """The frame count the model was built for (``vision_config.num_frames``), read from its config file."""
    config = Path(location) / "config.json"
    try:
        return int(json.loads(config.read_text()).get("vision_config", {}).get("num_frames", DEFAULT_FRAMES))
    except (OSError, ValueError, TypeError):
        return DEFAULT_FRAMES


class XClipScorer(MediaScorer):
    """X-CLIP video and text embeddings with the store's embedding cache."""

    modality = "video"

    def __init__(self, spec: BackendSpec, store: Store, device: str = "auto", dtype: str | None = None,
                 batch_size: int = 8) -> None:
        check_weights_source(spec)
        self.location = weights_location(spec.model)
        self.frames = model_frames(self.location)
        super().__init__(spec, store, device=device, dtype=dtype, batch_size=batch_size)

    def _register(self) -> tuple[int, str]:
        return register_model(self.store, kind="scorer", backend="xclip", name=str(self.spec), weights=self.spec.model,
                              settings={"dtype": f"torch.{self.dtype_name}", "impl": IMPL, "frames": self.frames,
                                        "sampling": "segment-centres", "similarity": "cos(video, text)"})

    def _load_model(self) -> tuple[Any, Any, Any]:
        from transformers import AutoImageProcessor, AutoTokenizer, XCLIPModel

        try:
            model = XCLIPModel.from_pretrained(self.location, dtype=self.dtype)
            processor = AutoImageProcessor.from_pretrained(self.location)
            tokenizer = AutoTokenizer.from_pretrained(self.location)
        except Exception as exc:  # missing weights, not an X-CLIP folder: say which
            raise BackendError(f"cannot load X-CLIP model {self.spec}: {first_line(exc)}") from exc
        tokenizer.padding_side = "right"  # CLIP's: a text's embedding must not depend on its batch
        return model.to(self.device).eval(), processor, tokenizer

    def _decode(self, ref: MediaRef) -> np.ndarray:
        return video_frames(ref, self.frames)

    def _media_batch(self, decoded: list[np.ndarray]) -> np.ndarray:
        import torch

        model, processor, _ = self._loaded()
        self.forward_passes += 1
        pixels = processor([list(frames) for frames in decoded], return_tensors="pt")["pixel_values"]
        with torch.inference_mode():
            return normalise(model.get_video_features(pixel_values=pixels.to(self.device, self.dtype)))

    def _text_batch(self, texts: list[str]) -> np.ndarray:
        import torch

        model, _, tokenizer = self._loaded()
        self.forward_passes += 1
        limit = model.config.text_config.max_position_embeddings
        enc = tokenizer(texts, padding=True, truncation=True, max_length=limit, return_tensors="pt").to(self.device)
        with torch.inference_mode():
            return normalise(model.get_text_features(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]))


@register("scorer", "xclip")
def build(spec: BackendSpec, store: Store, **options: Any) -> XClipScorer:
    return XClipScorer(spec, store, **{k: v for k, v in options.items() if k in ("device", "dtype", "batch_size")})
