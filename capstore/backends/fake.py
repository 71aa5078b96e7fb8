"""Scripted, deterministic stand-ins for a generator and a captioner, for fast engine tests.

They go through the same generation cache and usage events as the real backends, so caching and
"zero model calls" are tested for real. Models (the part after ``fake:``):
- generator ``fake:mutate``: answers MILS prompts with numbered variations of the given descriptions;
  ``fake:garbage`` answers without any ``N. text`` line; ``fake:fail`` fails every call;
  ``fake:slow`` is ``mutate`` taking 0.1 s per answer (to make workers overlap in tests);
  ``fake:binary`` is ``mutate`` with NUL characters and lone surrogates in its lines.
- captioner ``fake:echo``: a caption from the image sha; ``fake:flaky`` fails each image's first call.
"""

from __future__ import annotations

import random
import re
import time
from functools import partial
from typing import Any, Sequence

from capstore.backends.base import CallContext, Generation, ImageRef
from capstore.backends.cache_keys import cache_key, generation_parts
from capstore.backends.caching import get_generations, put_generations
from capstore.backends.models import register_model
from capstore.backends.registry import BackendSpec, register
from capstore.backends.usage import record_usage
from capstore.store.content import sha256_text
from capstore.store.engine import Store

_WORDS = ("bright", "small", "large", "shiny", "round", "colourful", "simple", "flat", "tiny", "bold")
_LINE = re.compile(r"^-?\d+\.\d+: (.+)$")


class _Fake:
    kind = ""

    def __init__(self, spec: BackendSpec, store: Store, **params: Any) -> None:
        self.store, self.mode = store, spec.model
        self.params = {k: v for k, v in params.items() if k in ("requested", "num_candidates")}
        self.model_id, self.fingerprint = register_model(store, kind=self.kind, backend="fake", name=str(spec),
                                                         weights=f"fake:{spec.model}", settings={})
        self.model_calls = 0
        self.seen: dict[str, int] = {}

    def _serve(self, requests: list[tuple[dict[str, Any], Any]], ctx: CallContext, stage: str) -> list[Generation]:
        keys = [cache_key(p) for p, _ in requests]
        found = get_generations(self.store, keys)
        todo = [i for i, k in enumerate(keys) if k not in found]
        fresh = [requests[i][1]() for i in todo]
        self.model_calls += len(todo)
        ctx.store_write(partial(
            put_generations, self.store, self.model_id, [(keys[i], requests[i][0], g) for i, g in zip(todo, fresh)]))
        found.update((keys[i], g) for i, g in zip(todo, fresh))
        ctx.store_write(partial(
            record_usage, self.store, run_id=ctx.run_id, stage=ctx.stage or stage, model_id=self.model_id,
            device_type="cpu", device_name="fake", items=len(requests), calls=len(todo),
            cached=len(requests) - len(todo), tokens_in=sum(g.tokens_in for g in fresh),
            tokens_out=sum(g.tokens_out for g in fresh), worker=ctx.worker))
        return [found[k] for k in keys]


class FakeGenerator(_Fake):
    kind = "generator"

    def generate(self, prompts: Sequence[str], seeds: Sequence[int], ctx: CallContext = CallContext()) -> list[Generation]:
        reqs = [(generation_parts(backend="fake", model=self.fingerprint, impl="fake-1", params=self.params,
                                  prompt_sha=sha256_text(p), image_sha=None, seed=s), lambda p=p, s=s: self._answer(p, s))
                for p, s in zip(prompts, seeds)]
        return self._serve(reqs, ctx, "generate")

    def _answer(self, prompt: str, seed: int) -> Generation:
        if self.mode == "fail":
            return Generation(error="http_500 after 5 attempt(s): scripted failure", error_kind="http_500")
        if self.mode == "garbage":
            return Generation(text="I cannot help with that.", tokens_in=len(prompt.split()), tokens_out=5)
        if self.mode == "slow":
            time.sleep(0.1)
        rng = random.Random(seed)
        bases = [m.group(1) for line in prompt.splitlines() if (m := _LINE.match(line.strip()))] or ["a thing"]
        lines = [f"{n + 1}. {rng.choice(bases)} that is {rng.choice(_WORDS)} (variant {rng.randrange(100)})!"
                 for n in range(8)]
        if self.mode == "binary":  # what a broken model may emit: NUL characters and lone surrogates
            lines = [line.replace(" that", "\x00 that\ud800", 1) for line in lines]
        return Generation(text="\n".join(lines), tokens_in=len(prompt.split()), tokens_out=8 * 6)


class FakeCaptioner(_Fake):
    kind = "captioner"

    def caption(self, images: Sequence[ImageRef], seeds: Sequence[int], ctx: CallContext = CallContext()) -> list[Generation]:
        reqs = [(generation_parts(backend="fake", model=self.fingerprint, impl="fake-1", params=self.params,
                                  prompt_sha=None, image_sha=im.sha256, seed=s), lambda im=im, s=s: self._answer(im, s))
                for im, s in zip(images, seeds)]
        return self._serve(reqs, ctx, "caption")

    def _answer(self, image: ImageRef, seed: int) -> Generation:
        self.seen[image.sha256] = self.seen.get(image.sha256, 0) + 1
        if self.mode == "flaky" and self.seen[image.sha256] == 1:
            return Generation(error="http_429 after 5 attempt(s): scripted rate limit", error_kind="http_429")
        n = int(self.params.get("num_candidates", 1))
        cands = [f"a picture {image.sha256[:6]} number {seed % 97 + k}" for k in range(n)]
        return Generation(text=cands[0], tokens_in=10, tokens_out=6, extra={"candidates": cands} if n > 1 else {})


@register("generator", "fake")
def build_generator(spec: BackendSpec, store: Store, **options: Any) -> FakeGenerator:
    return FakeGenerator(spec, store, **options)


@register("captioner", "fake")
def build_captioner(spec: BackendSpec, store: Store, **options: Any) -> FakeCaptioner:
    return FakeCaptioner(spec, store, **options)
