"""What every backend offers: the contracts between models and the run engine.

Backends are built by ``capstore.backends.registry.load_backend(kind, spec, store, ...)`` and
do their own caching and accounting: every public call looks up the store's caches first,
computes only the misses, writes them in one transaction, and records one usage event (with
``calls=0`` when everything came from a cache); a caller may collect those writes to commit them
itself (``CallContext.writes``). The run engine never talks to torch directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class ImageRef:
    """An image known to the store: its sha256 and its bytes (already read and verified)."""

    sha256: str
    data: bytes


@dataclass(frozen=True)
class CallContext:
    """Who a backend call is for, so that its usage event and errors land on the right run/items."""

    run_id: int | None = None
    worker: str | None = None
    stage: str | None = None  # overrides the backend's default stage name in usage events
    # Where the caller collects the call's store writes (its usage event, new generations) to commit
    # them itself; None: the call writes them. A MILS worker writes them beside its step commit.
    writes: list[Callable[[], None]] | None = field(default=None, compare=False, repr=False)

    def store_write(self, write: Callable[[], None]) -> None:
        """A store write of this call: done now, or handed to the caller through ``writes``."""
        if self.writes is None:
            write()
        else:
            self.writes.append(write)


@dataclass
class Generation:
    """One generator or captioner output. ``error`` set means it failed and nothing was cached."""

    text: str = ""
    tokens_in: int = 0
    tokens_out: int = 0
    cached: bool = False
    error: str | None = None  # one line, e.g. "http_429: rate limited after 5 attempts"
    error_kind: str | None = None  # http_429, http_5xx, timeout, malformed_response, ...
    extra: dict[str, Any] = field(default_factory=dict)
    # Stopped by the token limit, not by an end token (HF: max_new_tokens reached; APIs: finish_reason
    # "length"). A generator's unfinished last line is then dropped from ``text`` (what MILS parses)
    # and the whole output kept in ``raw`` (what the cache stores).
    truncated: bool = False
    raw: str | None = None

    def __post_init__(self) -> None:
        self.text = storable(self.text)
        if self.raw is not None:
            self.raw = storable(self.raw)

    @property
    def output(self) -> str:
        """The model's whole output (``raw`` when a cut line was dropped from ``text``)."""
        return self.raw if self.raw is not None else self.text

    @property
    def ok(self) -> bool:
        return self.error is None


def storable(text: str) -> str:
    """Model output as text every engine stores: NUL characters dropped (PostgreSQL refuses them),
    lone surrogates replaced. A model's garbage must not crash a run on one engine and not the other."""
    text = text.replace("\x00", "")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text


@runtime_checkable
class Scorer(Protocol):
    """A CLIP-like model: image and text embeddings, scores = cosine of normalised embeddings."""

    model_id: int  # row in ``models``
    fingerprint: str

    def encode_texts(self, texts: Sequence[str], ctx: CallContext = CallContext(), cache: bool = True) -> np.ndarray:
        """L2-normalised float32 embeddings, one row per text (cached by text sha; ``cache=False``: computed,
        neither looked up nor stored, for texts whose scores are cached instead)."""
        ...

    def encode_images(self, images: Sequence[ImageRef], ctx: CallContext = CallContext()) -> np.ndarray:
        """L2-normalised float32 embeddings, one row per image (cached by image sha)."""
        ...

    def score(self, image: ImageRef, texts: Sequence[str], ctx: CallContext = CallContext()) -> np.ndarray:
        """Cosine similarity of the image with each text."""
        ...


@runtime_checkable
class Generator(Protocol):
    """A text LLM (MILS's generator). Sampling parameters are fixed when the backend is built."""

    model_id: int
    fingerprint: str
    params: dict[str, Any]  # temperature, top_p, max_new_tokens…: part of every cache key

    def generate(
        self, prompts: Sequence[str], seeds: Sequence[int], ctx: CallContext = CallContext()
    ) -> list[Generation]:
        """One output per prompt, sampled with the given per-prompt seed; cached hits are replayed."""
        ...


@runtime_checkable
class Captioner(Protocol):
    """A single-pass image captioner (BLIP-2, LLaVA, an OpenAI-compatible vision API)."""

    model_id: int
    fingerprint: str
    params: dict[str, Any]

    def caption(
        self, images: Sequence[ImageRef], seeds: Sequence[int], ctx: CallContext = CallContext()
    ) -> list[Generation]:
        """One caption per image (failed ones carry ``error``, are never cached)."""
        ...
