"""vLLM the recommended way: ``vllm serve`` in its own environment, capstore's ``openai:`` generator.

The server here is the scripted OpenAI-compatible one (``tests/openai_server.py``), answering
``GET /v1/models`` as vLLM's does (id, root, parent): the cache is keyed by the served model's
identity, not by the server's address.
"""

from __future__ import annotations

import socket

import pytest

from capstore.backends.registry import load_backend
from capstore.backends.remote import RetryPolicy
from capstore.errors import BackendError
from tests.openai_server import ScriptedServer

FAST = RetryPolicy(max_attempts=2, base_delay=0.01, max_delay=0.1, timeout=0.5, concurrency=4)


def _gen(store, url, name="test-llm"):  # type: ignore[no-untyped-def]
    return load_backend("generator", f"openai:{name}", store, base_url=url, api_key="k", policy=FAST)


def _closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def test_two_servers_of_the_same_weights_share_the_cache(demo_store) -> None:  # type: ignore[no-untyped-def]
    with ScriptedServer(["ok"]) as first, ScriptedServer(["ok"]) as second:
        a = _gen(demo_store, first.base_url)
        assert first.model_lists == 0  # building asks nothing
        out = a.generate(["p1", "p2"], [1, 2])
        assert a.identity == {"model": "test-llm", "root": "/weights/test-llm", "parent": None, "revision": None}
        b = _gen(demo_store, second.base_url)
        again = b.generate(["p1", "p2"], [1, 2])
        assert b.model_id == a.model_id and all(o.cached for o in again) and second.requests == []
        assert [o.text for o in again] == [o.text for o in out]
        assert (first.model_lists, second.model_lists) == (1, 1)
        assert all(r["seed"] in (1, 2) for r in first.requests)  # each request carries its own seed


def test_other_weights_under_the_same_name_do_not_replay(demo_store) -> None:  # type: ignore[no-untyped-def]
    other = [{"id": "test-llm", "object": "model", "root": "/weights/another-finetune", "parent": None}]
    with ScriptedServer(["ok"]) as first, ScriptedServer(["ok"], models=other) as second:
        a = _gen(demo_store, first.base_url)
        a.generate(["p1"], [1])
        b = _gen(demo_store, second.base_url)
        (out,) = b.generate(["p1"], [1])
        assert b.model_id != a.model_id and not out.cached and len(second.requests) == 1


def test_a_given_revision_needs_no_server_for_a_cached_rerun(demo_store) -> None:  # type: ignore[no-untyped-def]
    with ScriptedServer(["ok"]) as server:
        pinned = _gen(demo_store, server.base_url, "test-llm@2024-07-23")
        out = pinned.generate(["p1"], [1])
        assert server.model_lists == 0 and pinned.identity == {"model": "test-llm", "revision": "2024-07-23"}
        assert server.requests[0]["model"] == "test-llm"  # the revision is ours, not sent
    replay = _gen(demo_store, _closed_port_url(), "test-llm@2024-07-23").generate(["p1"], [1])  # server gone
    assert replay[0].cached and replay[0].text == out[0].text


def test_an_unknown_name_or_an_unreachable_server_is_one_line(demo_store) -> None:  # type: ignore[no-untyped-def]
    with ScriptedServer(["ok"]) as server:
        with pytest.raises(BackendError, match=r"does not serve 'llama-3' \(it serves: test-llm, gpt-4o\)"):
            _gen(demo_store, server.base_url, "llama-3").generate(["p"], [1])
        assert server.requests == []
    with pytest.raises(BackendError) as err:
        _gen(demo_store, _closed_port_url()).generate(["p"], [1])
    assert "\n" not in str(err.value) and "openai:test-llm@REVISION" in str(err.value)


def test_openai_api_models_keep_their_identity_without_asking(demo_store) -> None:  # type: ignore[no-untyped-def]
    import hashlib

    from capstore.backends.models import canonical_json

    gen = load_backend("generator", "openai:gpt-4o-2024-08-06", demo_store, base_url="https://api.openai.com/v1",
                       api_key="k")
    weights = hashlib.sha256(canonical_json(
        {"name": "openai-api:https://api.openai.com/v1/:gpt-4o-2024-08-06"}).encode()).hexdigest()
    expected = hashlib.sha256(canonical_json({"weights": weights, "backend": "openai",
                                              "settings": {"impl": "openai-generator-1"}}).encode()).hexdigest()
    assert gen.fingerprint == expected and gen.identity is None  # as before: existing caches stay valid


def test_finish_reason_length_drops_the_unfinished_line(demo_store) -> None:  # type: ignore[no-untyped-def]
    reply = "1. a red circle\n2. a blue square\n3. a yellow tri"
    with ScriptedServer(["length"], reply=reply) as server:
        gen = _gen(demo_store, server.base_url)
        (out,) = gen.generate(["p"], [1])
        assert (out.text, out.output, out.truncated) == ("1. a red circle\n2. a blue square", reply, True)
        (again,) = gen.generate(["p"], [1])
        assert again.cached and (again.text, again.output, again.truncated) == (out.text, reply, True)
        cap = load_backend("captioner", "openai:gpt-4o", demo_store, base_url=server.base_url, api_key="k",
                           policy=FAST)
        from tests.conftest import demo_images

        (caption,) = cap.caption(demo_images(demo_store, 1), [0])
        assert caption.text == reply and caption.truncated  # a caption is kept whole, and marked
