"""The OpenAI-compatible backends, for real, against a local HTTP server with failure modes."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from capstore.backends.base import CallContext
from capstore.backends.registry import load_backend
from capstore.backends.remote import RetryPolicy
from capstore.store.schema import GenerationCache, UsageEvent
from tests.conftest import demo_images
from tests.openai_server import ScriptedServer

FAST = RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.2, timeout=0.5, concurrency=4)


def _cached(store) -> int:  # type: ignore[no-untyped-def]
    with store.read() as s:
        return s.scalar(select(func.count()).select_from(GenerationCache))


def _gen(store, url):  # type: ignore[no-untyped-def]
    return load_backend("generator", "openai:test-llm", store, base_url=url, api_key="k", policy=FAST)


def test_success_is_cached_and_counts_tokens(demo_store) -> None:  # type: ignore[no-untyped-def]
    with ScriptedServer(["ok"]) as server:
        gen = _gen(demo_store, server.base_url)
        out = gen.generate(["p1", "p2"], [1, 2], CallContext(run_id=None))
        assert [o.text for o in out] == ["1. a red circle\n2. a blue square"] * 2
        assert out[0].tokens_in == 11 and out[0].tokens_out == 7
        assert server.requests[0]["seed"] in (1, 2) and server.requests[0]["temperature"] == 0.5
        again = gen.generate(["p1", "p2"], [1, 2])
        assert all(o.cached for o in again) and len(server.requests) == 2
    with demo_store.read() as s:
        event = s.scalars(select(UsageEvent).order_by(UsageEvent.id.desc())).first()
    assert event.calls == 0 and event.cached == 2 and event.device_type == "api"


@pytest.mark.parametrize("script, kind, attempts", [
    (["429", "429", "ok"], None, 3),
    (["500", "ok"], None, 2),
    (["hang", "ok"], None, 2),
    (["500"], "http_500", 3),
    (["429"], "http_429", 3),
    (["hang"], "timeout", 3),
    (["malformed"], "malformed_response", 1),
])
def test_retries_and_final_failures(demo_store, script: list[str], kind: str | None, attempts: int) -> None:  # type: ignore[no-untyped-def]
    with ScriptedServer(script) as server:
        (out,) = _gen(demo_store, server.base_url).generate(["prompt"], [0])
    assert out.extra["attempts"] == attempts
    if kind is None:
        assert out.ok and _cached(demo_store) == 1
    else:
        assert out.error_kind == kind and kind in out.error and "\n" not in out.error
        assert out.text == "" and _cached(demo_store) == 0  # a failure is never cached


def test_vision_captioner_sends_the_image_as_data_url(demo_store) -> None:  # type: ignore[no-untyped-def]
    images = demo_images(demo_store, 2)
    with ScriptedServer(["ok"], reply="A red circle in a clear blue sky.") as server:
        cap = load_backend("captioner", "openai:gpt-4o", demo_store, base_url=server.base_url, api_key="k", policy=FAST)
        out = cap.caption(images, [0, 0])
        content = server.requests[0]["messages"][0]["content"]
    assert [o.text for o in out] == ["A red circle in a clear blue sky."] * 2
    assert content[1]["image_url"]["url"].startswith("data:image/png;base64,")
    assert "prompt" not in server.requests[0]


def test_retry_after_is_honoured(demo_store) -> None:  # type: ignore[no-untyped-def]
    from capstore.backends.remote import call_with_retries

    waits: list[float] = []
    with ScriptedServer(["429", "ok"]) as server:
        gen = _gen(demo_store, server.base_url)
        out = call_with_retries(lambda: gen._chat([{"role": "user", "content": "x"}], 0), FAST, sleep=waits.append)
    assert out.ok and waits == [0.05]
