"""OpenAI-compatible chat generator (an API, or a vLLM/other server via ``base_url``)."""

from __future__ import annotations

from typing import Any, Sequence

from capstore.backends.api_backend import ApiBackend
from capstore.backends.base import CallContext, Generation
from capstore.backends.registry import BackendSpec, register
from capstore.store.content import sha256_text
from capstore.store.engine import Store


class OpenAIGenerator(ApiBackend):
    kind = "generator"
    impl = "openai-generator-1"

    def generate(self, prompts: Sequence[str], seeds: Sequence[int], ctx: CallContext = CallContext()) -> list[Generation]:
        requests = [
            (self._parts(sha256_text(p), None, s),
             lambda p=p, s=s: self._chat([{"role": "user", "content": p}], s))
            for p, s in zip(prompts, seeds)
        ]
        return self._run(requests, ctx, "generate")


@register("generator", "openai")
def build(spec: BackendSpec, store: Store, temperature: float = 0.5, top_p: float = 0.9,
          max_new_tokens: int = 512, **options: Any) -> OpenAIGenerator:
    conn = {k: options[k] for k in ("base_url", "api_key", "policy") if k in options}
    return OpenAIGenerator(spec, store, temperature=temperature, top_p=top_p, max_tokens=max_new_tokens, **conn)
