"""``clap:NAME-or-folder``: transformers' CLAP as an audio scorer (e.g. ``laion/clap-htsat-unfused``).

A clip is read with soundfile, averaged to mono, resampled with soxr to the feature extractor's rate
(48 kHz for LAION's models) and turned into its mel features as the model expects (padding,
``rand_trunc`` or ``fusion`` for clips longer than its window); embedded with
``get_audio_features``, a text with ``get_text_features``; the score is their cosine. The feature
extractor crops long clips at random (numpy's global generator): here that generator is seeded from
the clip's sha256 for the call, so a clip's embedding is the same in every run and store.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from capstore.backends.models import register_model, weights_location
from capstore.backends.preflight import check_weights_source
from capstore.backends.registry import BackendSpec, register
from capstore.backends.scorers.media_scorer import MediaScorer, normalise
from capstore.errors import BackendError, first_line
from capstore.store.engine import Store
from capstore.store.media import MediaRef, audio_waveform

IMPL = "clap-scorer-1"
DEFAULT_RATE = 48_000  # ClapFeatureExtractor's default


def model_rate(location: str) -> int:
    """The sampling rate the feature extractor expects, read from its config file."""
    try:
        config = json.loads((Path(location) / "preprocessor_config.json").read_text())
        return int(config.get("sampling_rate", DEFAULT_RATE))
    except (OSError, ValueError, TypeError):
        return DEFAULT_RATE


@contextmanager
def seeded_numpy(seed: int) -> Iterator[None]:
    """numpy's global generator seeded for the block, then restored."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


class ClapScorer(MediaScorer):
    """CLAP audio and text embeddings with the store's embedding cache."""

    modality = "audio"

    def __init__(self, spec: BackendSpec, store: Store, device: str = "auto", dtype: str | None = None,
                 batch_size: int = 8) -> None:
        check_weights_source(spec)
        self.location = weights_location(spec.model)
        self.sample_rate = model_rate(self.location)
        super().__init__(spec, store, device=device, dtype=dtype, batch_size=batch_size)

    def _register(self) -> tuple[int, str]:
        return register_model(self.store, kind="scorer", backend="clap", name=str(self.spec), weights=self.spec.model,
                              settings={"dtype": f"torch.{self.dtype_name}", "impl": IMPL,
                                        "sample_rate": self.sample_rate, "resampler": "soxr-hq", "mix": "mean",
                                        "crop": "seeded-by-sha256"})

    def _load_model(self) -> tuple[Any, Any, Any]:
        from transformers import AutoFeatureExtractor, AutoTokenizer, ClapModel

        try:
            model = ClapModel.from_pretrained(self.location, dtype=self.dtype)
            features = AutoFeatureExtractor.from_pretrained(self.location)
            tokenizer = AutoTokenizer.from_pretrained(self.location)
        except Exception as exc:  # missing weights, not a CLAP folder: say which
            raise BackendError(f"cannot load CLAP model {self.spec}: {first_line(exc)}") from exc
        tokenizer.padding_side = "right"
        return model.to(self.device).eval(), features, tokenizer

    def _decode(self, ref: MediaRef) -> tuple[int, np.ndarray]:
        return int(ref.sha256[:8], 16), audio_waveform(ref, self.sample_rate)

    def _media_batch(self, decoded: list[tuple[int, np.ndarray]]) -> np.ndarray:
        import torch

        model, features, _ = self._loaded()
        self.forward_passes += 1
        parts = []
        for seed, samples in decoded:  # one clip at a time: each crop from its own seeded generator
            with seeded_numpy(seed):
                parts.append(features(samples, sampling_rate=self.sample_rate, return_tensors="np"))
        inputs = {key: torch.from_numpy(np.concatenate([p[key] for p in parts])) for key in parts[0].keys()}
        inputs["input_features"] = inputs["input_features"].to(self.device, self.dtype)
        if "is_longer" in inputs:
            inputs["is_longer"] = inputs["is_longer"].to(self.device)
        with torch.inference_mode():
            return normalise(model.get_audio_features(**inputs))

    def _text_batch(self, texts: list[str]) -> np.ndarray:
        import torch

        model, _, tokenizer = self._loaded()
        self.forward_passes += 1
        limit = min(tokenizer.model_max_length, model.config.text_config.max_position_embeddings - 2)
        enc = tokenizer(texts, padding=True, truncation=True, max_length=limit, return_tensors="pt").to(self.device)
        with torch.inference_mode():
            return normalise(model.get_text_features(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]))


@register("scorer", "clap")
def build(spec: BackendSpec, store: Store, **options: Any) -> ClapScorer:
    return ClapScorer(spec, store, **{k: v for k, v in options.items() if k in ("device", "dtype", "batch_size")})
