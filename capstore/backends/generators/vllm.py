"""vLLM offline generator (GPU only; ``pip install 'capstore[vllm]'``), with per-request seeds and the cache."""

from __future__ import annotations

import time
from typing import Any, Sequence

from capstore.backends.base import CallContext, Generation
from capstore.backends.cache_keys import cache_key, generation_parts
from capstore.backends.caching import get_generations, put_generations
from capstore.backends.models import register_model
from capstore.backends.registry import BackendSpec, register
from capstore.backends.usage import record_usage
from capstore.errors import BackendError
from capstore.store.content import sha256_text
from capstore.store.engine import Store

IMPL = "vllm-generator-1"


def _require_vllm():  # type: ignore[no-untyped-def]
    try:
        import vllm
    except ImportError as exc:
        raise BackendError("the vllm generator needs vllm and a CUDA GPU: pip install 'capstore[vllm]'") from exc
    import torch

    if not torch.cuda.is_available():
        raise BackendError("the vllm generator needs a CUDA GPU; none is available here (use --generator hf:…)")
    return vllm


class VLLMGenerator:
    def __init__(self, spec: BackendSpec, store: Store, temperature: float = 0.5, top_p: float = 0.9,
                 max_new_tokens: int = 512, dtype: str | None = None, **_: Any) -> None:
        vllm = _require_vllm()
        import torch

        self.store, self.vllm = store, vllm
        self.llm = vllm.LLM(model=spec.model, dtype=dtype or "auto")
        self.params: dict[str, Any] = {"temperature": temperature, "top_p": top_p, "max_new_tokens": max_new_tokens}
        self.model_id, self.fingerprint = register_model(store, kind="generator", backend="vllm", name=str(spec),
                                                         weights=spec.model, settings={"dtype": dtype or "auto", "impl": IMPL})
        self.device_name = torch.cuda.get_device_name(0)

    def generate(self, prompts: Sequence[str], seeds: Sequence[int], ctx: CallContext = CallContext()) -> list[Generation]:
        parts = [generation_parts(backend="vllm", model=self.fingerprint, impl=IMPL, params=self.params,
                                  prompt_sha=sha256_text(p), image_sha=None, seed=s) for p, s in zip(prompts, seeds)]
        keys = [cache_key(p) for p in parts]
        found = get_generations(self.store, keys)
        todo = [i for i, k in enumerate(keys) if k not in found]
        start, device_seconds = time.perf_counter(), 0.0
        if todo:
            sampling = [self.vllm.SamplingParams(temperature=self.params["temperature"], top_p=self.params["top_p"],
                                                 max_tokens=self.params["max_new_tokens"], seed=seeds[i]) for i in todo]
            messages = [[{"role": "user", "content": prompts[i]}] for i in todo]
            outs = self.llm.chat(messages, sampling_params=sampling, use_tqdm=False)
            # vllm's engine synchronises before returning outputs; the cache write below is not device time.
            device_seconds = time.perf_counter() - start
            fresh = [Generation(text=o.outputs[0].text, tokens_in=len(o.prompt_token_ids),
                                tokens_out=len(o.outputs[0].token_ids)) for o in outs]
            put_generations(self.store, self.model_id, [(keys[i], parts[i], g) for i, g in zip(todo, fresh)])
            found.update((keys[i], g) for i, g in zip(todo, fresh))
        wall = time.perf_counter() - start
        new = [found[keys[i]] for i in todo]
        record_usage(self.store, run_id=ctx.run_id, stage=ctx.stage or "generate", model_id=self.model_id,
                     device_type="cuda", device_name=self.device_name, device_seconds=device_seconds,
                     wall_seconds=wall, tokens_in=sum(g.tokens_in for g in new), tokens_out=sum(g.tokens_out for g in new),
                     items=len(prompts), calls=1 if todo else 0, cached=len(prompts) - len(todo), worker=ctx.worker)
        return [found[k] for k in keys]


@register("generator", "vllm")
def build(spec: BackendSpec, store: Store, **options: Any) -> VLLMGenerator:
    return VLLMGenerator(spec, store, **options)
