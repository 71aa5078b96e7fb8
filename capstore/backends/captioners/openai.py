"""OpenAI-compatible vision captioner: chat completions with the image as a base64 data URL (default gpt-4o)."""

from __future__ import annotations

import base64
from typing import Any, Sequence

from capstore.backends.api_backend import ApiBackend
from capstore.backends.base import CallContext, Generation, ImageRef
from capstore.backends.registry import BackendSpec, register
from capstore.store.content import sha256_text
from capstore.store.engine import Store

DEFAULT_PROMPT = "Write a one-sentence caption of this image, in the style of COCO captions."


def data_url(image: ImageRef) -> str:
    """The image as a data URL (its format guessed from the magic bytes)."""
    mime = "image/png" if image.data[:8] == b"\x89PNG\r\n\x1a\n" else "image/jpeg"
    return f"data:{mime};base64,{base64.b64encode(image.data).decode()}"


class OpenAICaptioner(ApiBackend):
    kind = "captioner"
    impl = "openai-captioner-1"

    def __init__(self, spec: BackendSpec, store: Store, prompt: str = DEFAULT_PROMPT, **kwargs: Any) -> None:
        self.prompt = prompt
        super().__init__(spec, store, **kwargs)
        self.params["prompt"] = prompt  # part of the cache key; sent inside the message, not as a parameter

    def caption(self, images: Sequence[ImageRef], seeds: Sequence[int], ctx: CallContext = CallContext()) -> list[Generation]:
        requests = [(self._parts(sha256_text(self.prompt), im.sha256, s), lambda im=im, s=s: self._ask(im, s))
                    for im, s in zip(images, seeds)]
        return self._run(requests, ctx, "caption", images=len(images))

    def _ask(self, image: ImageRef, seed: int) -> Generation:
        content = [{"type": "text", "text": self.prompt}, {"type": "image_url", "image_url": {"url": data_url(image)}}]
        return self._chat([{"role": "user", "content": content}], seed)


@register("captioner", "openai")
def build(spec: BackendSpec, store: Store, prompt: str | None = None, max_new_tokens: int = 60,
          temperature: float | None = None, **options: Any) -> OpenAICaptioner:
    conn = {k: options[k] for k in ("base_url", "api_key", "policy") if k in options}
    return OpenAICaptioner(spec, store, prompt=prompt or DEFAULT_PROMPT, max_tokens=max_new_tokens,
                           temperature=temperature, **conn)
