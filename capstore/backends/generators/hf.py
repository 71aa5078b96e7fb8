"""transformers causal-LM generator: chat template, left-padded batches, seeded per request, cached.

``hf:meta-llama/Meta-Llama-3.1-8B-Instruct`` (MILS's generator; needs the weights locally) or
``hf:/path/to/folder``. Sampling: temperature 0.5, top-p 0.9 and at most 3,000 new tokens by default,
as in MILS; bfloat16 on GPUs that have it (MILS's dtype), float16 on older ones, float32 on CPU.
An answer stops at any of the model's end tokens (``generation_config.eos_token_id``, a list for
Llama-3.1); one that reached ``max_new_tokens`` instead is marked ``truncated`` and loses its
unfinished last line, which MILS's parser would otherwise read as a candidate.
"""

from __future__ import annotations

import time
from functools import partial
from typing import Any, Sequence

from capstore.backends.base import CallContext, Generation
from capstore.backends.cache_keys import cache_key, generation_parts
from capstore.backends.caching import get_generations, put_generations
from capstore.backends.devices import device_name, resolve_device, resolve_dtype, timed_batches, torch_dtype
from capstore.backends.models import register_model, weights_location
from capstore.backends.preflight import check_weights_source
from capstore.backends.presets import MILS_SAMPLING
from capstore.backends.registry import BackendSpec, register
from capstore.backends.sampling import (cut_answer, hit_token_limit, make_sampler, model_end_tokens, new_tokens,
                                        sampler_params)
from capstore.backends.usage import record_usage
from capstore.errors import BackendError, first_line
from capstore.store.content import sha256_text
from capstore.store.engine import Store

IMPL = "hf-generator-1"


class HFGenerator:
    """A causal LM behind the store's generation cache.

    Building one is cheap (device, dtype, the weights' fingerprint; no torch, no transformers): the
    tokenizer and weights are loaded by the first call that misses the cache.
    """

    def __init__(self, spec: BackendSpec, store: Store, device: str = "auto", dtype: str | None = None,
                 temperature: float = MILS_SAMPLING["temperature"], top_p: float = MILS_SAMPLING["top_p"],
                 max_new_tokens: int = MILS_SAMPLING["max_new_tokens"],
                 batch_size: int = 16) -> None:
        self.spec, self.store, self.batch_size = spec, store, batch_size
        self.device = resolve_device(device)
        self.dtype_name = resolve_dtype(dtype, self.device, kind="generator")
        check_weights_source(spec)
        self.params: dict[str, Any] = {"temperature": temperature, "top_p": top_p, "max_new_tokens": max_new_tokens,
                                       **sampler_params(self.device, sampling=True)}
        self.model_id, self.fingerprint = register_model(
            store, kind="generator", backend="hf", name=str(spec), weights=spec.model,
            settings={"dtype": f"torch.{self.dtype_name}", "impl": IMPL})
        self.device_name = device_name(self.device)
        self.model_calls = 0
        self._loaded: tuple[Any, Any] | None = None  # (tokenizer, model)

    @property
    def dtype(self):  # type: ignore[no-untyped-def]  # -> torch.dtype
        return torch_dtype(self.dtype_name)

    @property
    def tokenizer(self):  # type: ignore[no-untyped-def]
        return self._load()[0]

    @property
    def model(self):  # type: ignore[no-untyped-def]
        return self._load()[1]

    def load(self):  # type: ignore[no-untyped-def]
        """Load the weights now instead of on the first cache miss (BackendError if they cannot be); returns self."""
        self._load()
        return self

    def _load(self) -> tuple[Any, Any]:
        """Load tokenizer and weights (once, on the first cache miss)."""
        if self._loaded is None:
            from transformers import AutoModelForCausalLM, AutoTokenizer

            try:
                where = weights_location(self.spec.model)
                tokenizer = AutoTokenizer.from_pretrained(where, padding_side="left")
                model = AutoModelForCausalLM.from_pretrained(where, dtype=self.dtype).to(self.device).eval()
            except Exception as exc:
                raise BackendError(f"cannot load generator {self.spec}: {first_line(exc)}") from exc
            if tokenizer.pad_token is None:
                tokenizer.pad_token = tokenizer.eos_token
            self._loaded = (tokenizer, model)
        return self._loaded

    def generate(self, prompts: Sequence[str], seeds: Sequence[int], ctx: CallContext = CallContext()) -> list[Generation]:
        parts = [generation_parts(backend="hf", model=self.fingerprint, impl=IMPL, params=self.params,
                                  prompt_sha=sha256_text(p), image_sha=None, seed=s) for p, s in zip(prompts, seeds)]
        keys = [cache_key(p) for p in parts]
        found = get_generations(self.store, keys)
        todo = [i for i, k in enumerate(keys) if k not in found]
        if todo:
            self._load()  # before the timing: loading is not device time of this call

        def keep(batch: list[int], outs: Sequence[Generation]) -> None:
            ctx.store_write(partial(
                put_generations, self.store, self.model_id, [(keys[i], parts[i], g) for i, g in zip(batch, outs)]))
            found.update((keys[i], g) for i, g in zip(batch, outs))

        start_wall = time.perf_counter()
        device_seconds = timed_batches(self.device, todo, self.batch_size,
                                       lambda batch: self._generate([prompts[i] for i in batch],
                                                                    [seeds[i] for i in batch]), keep)
        wall_seconds = time.perf_counter() - start_wall
        results = [found[k] for k in keys]
        fresh = [results[i] for i in todo]
        ctx.store_write(partial(
            record_usage, self.store, run_id=ctx.run_id, stage=ctx.stage or "generate", model_id=self.model_id,
            device_type=self.device.split(":")[0], device_name=self.device_name, device_seconds=device_seconds,
            wall_seconds=wall_seconds, tokens_in=sum(g.tokens_in for g in fresh),
            tokens_out=sum(g.tokens_out for g in fresh), items=len(prompts), calls=-(-len(todo) // self.batch_size),
            cached=len(prompts) - len(todo), worker=ctx.worker))
        return results

    def _generate(self, prompts: list[str], seeds: list[int]) -> list[Generation]:
        import torch
        from transformers import LogitsProcessorList

        self.model_calls += 1
        texts = [self.tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                                    add_generation_prompt=True) for p in prompts]
        enc = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        sampler = make_sampler(seeds, self.params["temperature"], self.params["top_p"], self.device)
        with torch.inference_mode():
            out = self.model.generate(**enc, do_sample=False, max_new_tokens=self.params["max_new_tokens"],
                                      logits_processor=LogitsProcessorList([sampler]),
                                      pad_token_id=self.tokenizer.pad_token_id)
        prompt_len = enc["input_ids"].shape[1]
        lengths = new_tokens(out, prompt_len, model_end_tokens(self.model, self.tokenizer), self.tokenizer.pad_token_id)
        decoded = self.tokenizer.batch_decode(out[:, prompt_len:], skip_special_tokens=True)
        n_in = enc["attention_mask"].sum(dim=1).tolist()
        limit = self.params["max_new_tokens"]
        return [cut_answer(text, hit_token_limit(count, ended, limit), tokens_in=int(n), tokens_out=count)
                for text, n, (count, ended) in zip(decoded, n_in, lengths)]


@register("generator", "hf")
def build(spec: BackendSpec, store: Store, **options: Any) -> HFGenerator:
    allowed = ("device", "dtype", "temperature", "top_p", "max_new_tokens", "batch_size")
    return HFGenerator(spec, store, **{k: v for k, v in options.items() if k in allowed})
