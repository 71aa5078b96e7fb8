"""OpenAI-compatible chat generator: an API, or a server of open weights via ``base_url``.

The recommended way to run MILS's generator with vLLM is its own server in its own environment
(``vllm serve meta-llama/Meta-Llama-3.1-8B-Instruct --max-model-len 8192``) and
``--generator openai:meta-llama/Meta-Llama-3.1-8B-Instruct --base-url http://HOST:8000/v1``: each
request carries its seed (vLLM samples it reproducibly), and the cache is keyed by the served
model's identity (``api_backend``). An answer cut by ``max_tokens`` (``finish_reason == "length"``)
loses its unfinished last line and is marked ``truncated``.
"""

from __future__ import annotations

from typing import Any, Sequence

from capstore.backends.api_backend import ApiBackend
from capstore.backends.base import CallContext, Generation
from capstore.backends.presets import MILS_SAMPLING
from capstore.backends.registry import BackendSpec, register
from capstore.store.content import sha256_text
from capstore.store.engine import Store


class OpenAIGenerator(ApiBackend):
    kind = "generator"
    impl = "openai-generator-1"
    drop_cut_line = True

    def generate(self, prompts: Sequence[str], seeds: Sequence[int], ctx: CallContext = CallContext()) -> list[Generation]:
        requests = [
            (self._parts(sha256_text(p), None, s),
             lambda p=p, s=s: self._chat([{"role": "user", "content": p}], s))
            for p, s in zip(prompts, seeds)
        ]
        return self._run(requests, ctx, "generate")


@register("generator", "openai")
def build(spec: BackendSpec, store: Store, temperature: float = MILS_SAMPLING["temperature"],
          top_p: float = MILS_SAMPLING["top_p"], max_new_tokens: int = MILS_SAMPLING["max_new_tokens"],
          **options: Any) -> OpenAIGenerator:
    conn = {k: options[k] for k in ("base_url", "api_key", "policy") if k in options}
    return OpenAIGenerator(spec, store, temperature=temperature, top_p=top_p, max_tokens=max_new_tokens, **conn)
