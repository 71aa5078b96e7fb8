"""What the OpenAI-compatible generator and captioner share: identity, cache, retries, usage.

**Identity of the model behind the API.** On OpenAI's own API the model is its name at that
address (``gpt-4o-2024-08-06``: pin dated names). On any other server (``--base-url``, e.g.
``vllm serve``) the cache is keyed by the *served model's* identity, not by the address: the entry
of ``GET /v1/models`` whose ``id`` is the name asked for — its ``root`` (the weights the server
loaded, a hub name or a path) and ``parent`` — plus a revision, ``openai:NAME@REVISION`` if given,
else one the server reports. So two servers of the same weights share one cache, and a server
restarted on other weights under the same name does not replay the old answers. With ``@REVISION``
the server is not asked: a run served from the caches then needs no server. The identity is
resolved on the first call, never when the backend is built.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Sequence
from urllib.parse import urlsplit

from capstore.backends.base import CallContext, Generation
from capstore.backends.cache_keys import cache_key, generation_parts
from capstore.backends.caching import get_generations, put_generations
from capstore.backends.models import canonical_json, register_model
from capstore.backends.registry import BackendSpec
from capstore.backends.remote import RetryPolicy, make_client, run_concurrently
from capstore.backends.sampling import cut_answer
from capstore.backends.usage import record_usage
from capstore.errors import BackendError, first_line
from capstore.store.engine import Store


class ApiBackend:
    """Base of the API backends: requests → cache lookup → concurrent calls with retries → cache."""

    kind = ""
    impl = ""
    drop_cut_line = False  # drop the unfinished last line of an answer cut by the token limit (generators)

    def __init__(self, spec: BackendSpec, store: Store, base_url: str | None = None, api_key: str | None = None,
                 policy: RetryPolicy | None = None, **params: Any) -> None:
        self.store, self.spec = store, spec
        self.policy = policy or RetryPolicy()
        self.client = make_client(base_url, api_key, self.policy.timeout)
        self.model = spec.model
        self.send_params = {k: v for k, v in params.items() if v is not None}  # sent with each request
        self.params: dict[str, Any] = dict(params)  # what the cache key carries (may add more)
        self.server = str(self.client.base_url)
        self._registered: tuple[int, str] | None = None
        self.identity: dict[str, Any] | None = None  # the served model's identity (other servers than OpenAI's)

    @property
    def model_id(self) -> int:
        return self._register()[0]

    @property
    def fingerprint(self) -> str:
        return self._register()[1]

    def _register(self) -> tuple[int, str]:
        """The model row: OpenAI's name at its address, or the served model's identity (asked once)."""
        if self._registered is None:
            if is_openai_api(self.server):
                weights = f"openai-api:{self.server}:{self.spec.model}"
            else:
                self.identity = served_identity(self.client, self.spec, self.server)
                weights = f"served-model:{canonical_json(self.identity)}"
            self._registered = register_model(self.store, kind=self.kind, backend="openai", name=str(self.spec),
                                              weights=weights, settings={"impl": self.impl})
        return self._registered

    def _run(self, requests: Sequence[tuple[dict[str, Any], Callable[[], Generation]]], ctx: CallContext,
             stage: str, images: int = 0) -> list[Generation]:
        keys = [cache_key(parts) for parts, _ in requests]
        found = get_generations(self.store, keys)
        todo = [i for i, k in enumerate(keys) if k not in found]
        start = time.perf_counter()
        fresh = run_concurrently([requests[i][1] for i in todo], self.policy)
        wall = time.perf_counter() - start
        # Written at once, not through ctx.store_write: paid answers are not left waiting for a commit.
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
        choice = response.choices[0]
        text = choice.message.content
        if not isinstance(text, str):
            raise ValueError("response has no message content")
        cut = choice.finish_reason == "length"  # stopped by max_tokens (or the server's context), not by the model
        usage = response.usage
        counts = {"tokens_in": getattr(usage, "prompt_tokens", 0) or 0,
                  "tokens_out": getattr(usage, "completion_tokens", 0) or 0}
        if self.drop_cut_line:
            return cut_answer(text.strip(), cut, **counts)
        return Generation(text=text.strip(), truncated=cut, **counts)


def is_openai_api(server: str) -> bool:
    """Whether ``server`` is OpenAI's own API (its models are names), not a server of weights."""
    host = urlsplit(server).hostname or ""
    return host == "openai.com" or host.endswith(".openai.com")


def served_identity(client: Any, spec: BackendSpec, server: str) -> dict[str, Any]:
    """What identifies the model ``spec.model`` served at ``server``: name and ``@REVISION`` if given
    (the server is not asked), else its ``/v1/models`` entry's ``root``, ``parent`` and any revision."""
    if spec.tag:
        return {"model": spec.model, "revision": spec.tag}
    try:
        served = [m.model_dump() for m in client.models.list()]
    except Exception as exc:
        raise BackendError(f"{spec.kind} {spec}: cannot ask {server} which model it serves ({first_line(exc)}); start the "
                           f"server, or give {spec.backend}:{spec.model}@REVISION to key the cache without asking") from exc
    entry = next((m for m in served if m.get("id") == spec.model), None)
    if entry is None:
        names = ", ".join(str(m.get("id")) for m in served) or "none"
        raise BackendError(f"{spec.kind} {spec}: {server} does not serve {spec.model!r} (it serves: {names})")
    return {"model": spec.model, "root": entry.get("root"), "parent": entry.get("parent"),
            "revision": entry.get("revision")}
