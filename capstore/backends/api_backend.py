"""What the OpenAI-compatible generator and captioner share: identity, cache, retries, usage."""

from __future__ import annotations

import time
from typing import Any, Callable, Sequence

from capstore.backends.base import CallContext, Generation
from capstore.backends.cache_keys import cache_key, generation_parts
from capstore.backends.caching import get_generations, put_generations
from capstore.backends.models import register_model
from capstore.backends.registry import BackendSpec
from capstore.backends.remote import RetryPolicy, make_client, run_concurrently
from capstore.backends.usage import record_usage
from capstore.store.engine import Store


class ApiBackend:
    """Base of the API backends: requests → cache lookup → concurrent calls with retries → cache."""

    kind = ""
    impl = ""

    def __init__(self, spec: BackendSpec, store: Store, base_url: str | None = None, api_key: str | None = None,
                 policy: RetryPolicy | None = None, **params: Any) -> None:
        self.store, self.spec = store, spec
        self.policy = policy or RetryPolicy()
        self.client = make_client(base_url, api_key, self.policy.timeout)
        self.model = spec.model
        self.send_params = {k: v for k, v in params.items() if v is not None}  # sent with each request
        self.params: dict[str, Any] = dict(params)  # what the cache key carries (may add more)
        where = str(self.client.base_url)
        self.model_id, self.fingerprint = register_model(
            store, kind=self.kind, backend="openai", name=str(spec), weights=f"openai-api:{where}:{spec.model}",
            settings={"impl": self.impl})

    def _run(self, requests: Sequence[tuple[dict[str, Any], Callable[[], Generation]]], ctx: CallContext,
             stage: str, images: int = 0) -> list[Generation]:
        keys = [cache_key(parts) for parts, _ in requests]
        found = get_generations(self.store, keys)
        todo = [i for i, k in enumerate(keys) if k not in found]
        start = time.perf_counter()
        fresh = run_concurrently([requests[i][1] for i in todo], self.policy)
        wall = time.perf_counter() - start
        put_generations(self.store, self.model_id, [(keys[i], requests[i][0], g) for i, g in zip(todo, fresh)])
        results = dict(found)
        results.update((keys[i], g) for i, g in zip(todo, fresh))
        record_usage(self.store, run_id=ctx.run_id, stage=ctx.stage or stage, model_id=self.model_id,
                     device_type="api", device_name=self.model, wall_seconds=wall,
                     tokens_in=sum(g.tokens_in for g in fresh), tokens_out=sum(g.tokens_out for g in fresh),
                     images=round(images * len(todo) / len(requests)) if requests else 0, items=len(requests),
                     calls=sum(g.extra.get("attempts", 1) for g in fresh), cached=len(requests) - len(todo),
                     worker=ctx.worker)
        return [results[k] for k in keys]

    def _parts(self, prompt_sha: str | None, image_sha: str | None, seed: int | None) -> dict[str, Any]:
        return generation_parts(backend="openai", model=self.fingerprint, impl=self.impl, params=self.params,
                                prompt_sha=prompt_sha, image_sha=image_sha, seed=seed)

    def _chat(self, messages: list[dict[str, Any]], seed: int | None) -> Generation:
        response = self.client.chat.completions.create(
            model=self.model, messages=messages, seed=seed, **self.send_params)
        text = response.choices[0].message.content
        if not isinstance(text, str):
            raise ValueError("response has no message content")
        usage = response.usage
        return Generation(text=text.strip(), tokens_in=getattr(usage, "prompt_tokens", 0) or 0,
                          tokens_out=getattr(usage, "completion_tokens", 0) or 0)
