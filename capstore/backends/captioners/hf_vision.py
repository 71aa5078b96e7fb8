"""Shared machinery of the transformers vision captioners (BLIP-2, LLaVA): load, batch, seed, cache.

Cache key parts: model fingerprint, image sha, prompt sha, generation params (the decoding preset's
name among them, see ``decoding.py``), seed (per image and candidate). ``num_candidates`` > 1
samples that many captions per image (seeds seed, seed+1, …); they come back in
``Generation.extra["candidates"]`` and the first is the caption. A caption that reached
``max_new_tokens`` is marked ``truncated`` (and kept whole: a caption is one line).
"""

from __future__ import annotations

import importlib.util
import time
from functools import partial
from typing import Any, Sequence

from capstore.backends.base import CallContext, Generation, ImageRef
from capstore.backends.cache_keys import cache_key, generation_parts
from capstore.backends.caching import get_generations, put_generations
from capstore.backends.devices import device_name, resolve_device, resolve_dtype, timed_batches, torch_dtype
from capstore.backends.models import register_model, weights_location
from capstore.backends.preflight import check_weights_source
from capstore.backends.registry import BackendSpec
from capstore.backends.captioners.decoding import generate_kwargs, resolve_decoding
from capstore.backends.sampling import hit_token_limit, make_sampler, model_end_tokens, new_tokens, sampler_params
from capstore.backends.usage import record_usage
from capstore.errors import BackendError, InputError, first_line
from capstore.store.content import sha256_text
from capstore.store.engine import Store
from capstore.store.images import decode_image


class HFVisionCaptioner:
    """Base class: subclasses set ``backend``, ``impl``, ``model_class`` and ``build_prompt``."""

    backend = ""
    impl = ""
    default_prompt = ""

    def __init__(self, spec: BackendSpec, store: Store, device: str = "auto", dtype: str | None = None,
                 prompt: str | None = None, max_new_tokens: int | None = None, do_sample: bool = False,
                 temperature: float = 1.0, top_p: float = 0.9, num_candidates: int = 1, batch_size: int = 8,
                 adapter: str | None = None, decoding: str | None = None) -> None:
        self.spec, self.store, self.batch_size, self.adapter = spec, store, batch_size, adapter
        self.device = resolve_device(device)
        self.dtype_name = resolve_dtype(dtype, self.device, kind="captioner")
        check_weights_source(spec)
        if adapter and importlib.util.find_spec("peft") is None:
            raise BackendError(f"{spec}: --adapter needs peft (pip install 'capstore[peft]')")
        self.prompt = prompt if prompt is not None else self.default_prompt
        self.num_candidates = max(1, num_candidates)
        self.decoding = resolve_decoding(decoding, self.num_candidates, do_sample)
        sampling = self.decoding.do_sample
        self.params: dict[str, Any] = {"prompt": self.prompt, "decoding": self.decoding.name,
                                       "max_new_tokens": max_new_tokens or self.decoding.max_new_tokens,
                                       "do_sample": sampling, "temperature": temperature if sampling else None,
                                       "top_p": top_p if sampling else None, "num_candidates": self.num_candidates,
                                       **sampler_params(self.device, sampling)}
        settings = {"dtype": f"torch.{self.dtype_name}", "impl": self.impl}
        weights = spec.model if adapter is None else f"{spec.model}+adapter"
        self.model_id, self.fingerprint = register_model(store, kind="captioner", backend=self.backend,
                                                         name=str(spec), weights=weights, settings=settings)
        if adapter:  # the adapter's weights are part of the identity
            from capstore.backends.models import weights_sha

            self.fingerprint = sha256_text(self.fingerprint + weights_sha(adapter))
            self.model_id, _ = register_model(store, kind="captioner", backend=self.backend, name=f"{spec}+{adapter}",
                                              weights=adapter, settings={**settings, "base": self.fingerprint})
        self.device_name = device_name(self.device)
        self.model_calls = 0
        self._loaded: tuple[Any, Any] | None = None  # (processor, model)

    @property
    def dtype(self):  # type: ignore[no-untyped-def]  # -> torch.dtype
        return torch_dtype(self.dtype_name)

    @property
    def processor(self):  # type: ignore[no-untyped-def]
        return self._load()[0]

    @property
    def model(self):  # type: ignore[no-untyped-def]
        return self._load()[1]

    @property
    def tokenizer(self):  # type: ignore[no-untyped-def]
        return self.processor.tokenizer

    def load(self):  # type: ignore[no-untyped-def]
        """Load the weights now instead of on the first cache miss (BackendError if they cannot be); returns self."""
        self._load()
        return self

    def _load(self) -> tuple[Any, Any]:
        """Load processor, weights and adapter (once, on the first cache miss)."""
        if self._loaded is None:
            from transformers import AutoProcessor

            where = weights_location(self.spec.model)
            try:
                processor = AutoProcessor.from_pretrained(where)
                model = self.model_class().from_pretrained(where, dtype=self.dtype)
                if self.adapter:
                    from peft import PeftModel

                    model = PeftModel.from_pretrained(model, self.adapter)
            except Exception as exc:
                raise BackendError(f"cannot load captioner {self.spec}: {first_line(exc)}") from exc
            processor.tokenizer.padding_side = "left"
            self._loaded = (processor, model.to(self.device).eval())
        return self._loaded

    def model_class(self):  # type: ignore[no-untyped-def]
        raise NotImplementedError

    def build_prompt(self) -> str:
        raise NotImplementedError

    def caption(self, images: Sequence[ImageRef], seeds: Sequence[int], ctx: CallContext = CallContext()) -> list[Generation]:
        parts = [generation_parts(backend=self.backend, model=self.fingerprint, impl=self.impl, params=self.params,
                                  prompt_sha=sha256_text(self.prompt), image_sha=im.sha256, seed=s)
                 for im, s in zip(images, seeds)]
        keys = [cache_key(p) for p in parts]
        found = get_generations(self.store, keys)
        todo = [i for i, k in enumerate(keys) if k not in found]
        if todo:
            self._load()  # before the timing: loading is not device time of this call
        results: dict[str, Generation] = dict(found)

        def keep(batch: list[int], outs: Sequence[Generation]) -> None:
            ctx.store_write(partial(
                put_generations, self.store, self.model_id, [(keys[i], parts[i], g) for i, g in zip(batch, outs)]))
            results.update((keys[i], g) for i, g in zip(batch, outs))

        start_wall = time.perf_counter()
        device_seconds = timed_batches(self.device, todo, self.batch_size,
                                       lambda batch: self._caption_batch([images[i] for i in batch],
                                                                         [seeds[i] for i in batch]), keep)
        wall_seconds = time.perf_counter() - start_wall
        fresh = [results[keys[i]] for i in todo]
        ctx.store_write(partial(
            record_usage, self.store, run_id=ctx.run_id, stage=ctx.stage or "caption", model_id=self.model_id,
            device_type=self.device.split(":")[0], device_name=self.device_name, device_seconds=device_seconds,
            wall_seconds=wall_seconds, tokens_in=sum(g.tokens_in for g in fresh),
            tokens_out=sum(g.tokens_out for g in fresh), images=len(todo), items=len(images),
            calls=-(-len(todo) // self.batch_size), cached=len(images) - len(todo), worker=ctx.worker))
        return [results[k] for k in keys]

    def _caption_batch(self, images: list[ImageRef], seeds: list[int]) -> list[Generation]:
        import torch
        from transformers import LogitsProcessorList

        decoded: list[Generation | None] = [None] * len(images)
        pil, ok = [], []
        for i, im in enumerate(images):
            try:
                pil.append(decode_image(im))
                ok.append(i)
            except InputError as exc:  # a corrupt image fails its item only
                decoded[i] = Generation(error=str(exc), error_kind="corrupt_image")
        if ok:
            self.model_calls += 1
            n = self.num_candidates
            rows_pil = [p for p in pil for _ in range(n)]
            rows_seed = [seeds[i] + k for i in ok for k in range(n)]
            enc = self.processor(images=rows_pil, text=[self.build_prompt()] * len(rows_pil), return_tensors="pt",
                                 padding=True).to(self.device)
            enc["pixel_values"] = enc["pixel_values"].to(self.dtype)
            text_config = getattr(self.model.config, "text_config", None) or self.model.config
            kwargs = generate_kwargs(self.decoding, self.params["max_new_tokens"], text_config.is_encoder_decoder)
            kwargs["pad_token_id"] = self.tokenizer.pad_token_id
            if self.params["do_sample"]:
                kwargs["logits_processor"] = LogitsProcessorList([make_sampler(
                    rows_seed, self.params["temperature"], self.params["top_p"], self.device)])
            with torch.inference_mode():
                out = self.model.generate(**enc, **kwargs)
            # A decoder-only language model (OPT, Llama) returns the prompt then the new tokens; an
            # encoder-decoder one (BLIP-2 Flan-T5) returns only the decoder's tokens, after its start token.
            plen = 1 if text_config.is_encoder_decoder else enc["input_ids"].shape[1]
            texts = [t.strip() for t in self.tokenizer.batch_decode(out[:, plen:], skip_special_tokens=True)]
            lengths = new_tokens(out, plen, model_end_tokens(self.model, self.tokenizer), self.tokenizer.pad_token_id)
            cut = [hit_token_limit(count, ended, self.params["max_new_tokens"]) for count, ended in lengths]
            n_in = enc["attention_mask"].sum(dim=1).tolist()
            for j, i in enumerate(ok):
                rows = slice(j * n, (j + 1) * n)
                cands = texts[rows]
                decoded[i] = Generation(text=cands[0], tokens_in=int(sum(n_in[rows])),
                                        tokens_out=sum(count for count, _ in lengths[rows]), truncated=any(cut[rows]),
                                        extra={"candidates": cands} if n > 1 else {})
        return [g for g in decoded if g is not None]
