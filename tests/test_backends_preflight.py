"""Backend checks before a run is created: device, dtypes, API key, weights folders, hub reachability."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Iterator

import pytest

from capstore.backends import preflight
from capstore.backends.cuda_probe import cuda_devices
from capstore.backends.preflight import check_backends, hub_reachable
from capstore.errors import BackendError, InputError

HUB_NAME = "acme/not-on-this-machine"


@pytest.fixture(autouse=True)
def fresh_probe(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """Each test probes anew, with an empty Hugging Face cache and no proxy or hub settings of the machine."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    for var in ("HF_HUB_OFFLINE", "HF_ENDPOINT", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    hub_reachable.cache_clear()
    yield
    hub_reachable.cache_clear()


def _closed_port() -> int:
    """A local port nothing listens on (connections are refused at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(bool(cuda_devices()), reason="this machine has CUDA")
@pytest.mark.parametrize("device", ["cuda", "cuda:0", "cuda:3"])
def test_cuda_without_cuda_is_refused(device: str, tiny_models) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(BackendError, match=f"--device {device}: no CUDA device is available on this machine"):
        check_backends([("scorer", tiny_models.specs["scorer"])], device=device)


@pytest.mark.parametrize("device", ["tpu", "gpu", "cuda:x", "CPU", "cuda:-1"])
def test_unknown_device_is_refused(device: str) -> None:
    with pytest.raises(InputError, match="expected auto, cpu, cuda or cuda:N"):
        check_backends([("generator", "fake:mutate")], device=device)


@pytest.mark.parametrize("option", ["dtype", "scorer_dtype", "generator_dtype"])
@pytest.mark.parametrize("value", ["float8", "fp16", "half", "torch.float16", "Float32"])
def test_unknown_dtype_is_refused_naming_the_option(option: str, value: str) -> None:
    flag = "--" + option.replace("_", "-")
    with pytest.raises(InputError, match=f"^{flag} '{value}': expected one of auto, float32, float16, bfloat16$"):
        check_backends([("generator", "fake:mutate")], device="cpu", **{option: value})


def test_openai_without_a_key_is_refused_unless_another_server_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    for kind in ("generator", "captioner"):
        with pytest.raises(InputError, match="OPENAI_API_KEY is not set"):
            check_backends([(kind, "openai:gpt-4o")], device="cpu")
        with pytest.raises(InputError, match="OPENAI_API_KEY"):
            check_backends([(kind, "openai:gpt-4o")], device="cpu", base_url="https://api.openai.com/v1")
        check_backends([(kind, "openai:llama")], device="cpu", base_url="http://127.0.0.1:8000/v1")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://vllm.internal:8000/v1")
    check_backends([("captioner", "openai:llava")], device="cpu")
    monkeypatch.delenv("OPENAI_BASE_URL")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    check_backends([("captioner", "openai:gpt-4o")], device="cpu")


def test_unknown_open_clip_name_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BackendError, match="unknown model name 'ViT-Q-99'"):
        check_backends([("scorer", "open_clip:ViT-Q-99@openai")], device="cpu")
    with pytest.raises(BackendError, match="has no open_clip_config.json"):
        check_backends([("scorer", f"open_clip:{tmp_path}")], device="cpu")


def test_missing_weights_folder_is_refused(tmp_path: Path) -> None:
    for kind, spec in (("generator", f"hf:{tmp_path}/llm"), ("captioner", f"blip2:{tmp_path}/b"),
                       ("captioner", "llava:./no/such/llava")):
        with pytest.raises(BackendError, match="no such folder"):
            check_backends([(kind, spec)], device="cpu")
    with pytest.raises(InputError, match="--adapter .*: no such folder"):
        check_backends([("captioner", "fake:echo")], device="cpu", adapter=str(tmp_path / "adapter"))


def test_hub_name_without_local_weights_fails_at_once_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(preflight, "hub_reachable", _must_not_probe)
    for kind, spec in (("generator", f"hf:{HUB_NAME}"), ("captioner", f"llava:{HUB_NAME}"),
                       ("captioner", f"blip2:{HUB_NAME}"), ("scorer", f"open_clip:hf-hub:{HUB_NAME}")):
        with pytest.raises(BackendError, match="not in the local Hugging Face cache and HF_HUB_OFFLINE=1"):
            check_backends([(kind, spec)], device="cpu")
    check_backends([("scorer", "open_clip:ViT-B-32@openai")], device="cpu")  # open_clip itself fails at once


def _must_not_probe(*_a, **_k) -> bool:  # type: ignore[no-untyped-def]
    raise AssertionError("probed the hub with HF_HUB_OFFLINE=1")


def test_hub_name_without_local_weights_fails_fast_when_the_hub_is_unreachable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    start = time.perf_counter()
    with pytest.raises(BackendError, match="cannot be reached .*HF_HUB_OFFLINE=1"):
        check_backends([("generator", f"hf:{HUB_NAME}")], device="cpu")
    with pytest.raises(BackendError, match="cannot be reached .*set HF_HUB_OFFLINE=1 to load the weights from the local cache"):
        check_backends([("scorer", "open_clip:ViT-B-32@openai")], device="cpu")
    assert time.perf_counter() - start < 3


def test_cached_hub_weights_need_no_network(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    snapshot = tmp_path / "hub" / "models--acme--cached" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (tmp_path / "hub" / "models--acme--cached" / "refs").mkdir()
    (tmp_path / "hub" / "models--acme--cached" / "refs" / "main").write_text("abc")
    monkeypatch.setattr(preflight, "hub_reachable", _must_not_probe)
    check_backends([("generator", "hf:acme/cached"), ("scorer", "open_clip:hf-hub:acme/cached")], device="cpu")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    check_backends([("generator", "hf:acme/cached")], device="cpu")
    from capstore.backends.models import weights_location

    assert weights_location("acme/cached") == str(snapshot)  # loaded from the snapshot: no hub request


def test_probe_is_bounded_when_the_hub_does_not_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    # A listening socket whose backlog is full drops further connection attempts: they hang.
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(0)
        port = server.getsockname()[1]
        fillers = [socket.socket() for _ in range(3)]
        for filler in fillers:
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
        time.sleep(0.1)
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
        start = time.perf_counter()
        assert hub_reachable(timeout=1.0) is False
        assert time.perf_counter() - start < 2.0
        for filler in fillers:
            filler.close()


def test_probe_is_bounded_when_the_name_lookup_hangs(monkeypatch: pytest.MonkeyPatch) -> None:
    def slow_lookup(*_a, **_k):  # type: ignore[no-untyped-def]  # a resolver that does not answer
        time.sleep(5)
        raise socket.gaierror("timed out")

    monkeypatch.setattr(socket, "getaddrinfo", slow_lookup)
    start = time.perf_counter()
    assert hub_reachable(("hub.invalid", 443), timeout=1.0) is False
    assert time.perf_counter() - start < 2.0


def test_probe_of_the_real_hub_returns_within_seconds() -> None:
    start = time.perf_counter()
    hub_reachable()  # False on a machine without internet, True with it: either way, at once
    assert time.perf_counter() - start < preflight.PROBE_SECONDS + 1.5


def test_probe_finds_a_listening_hub_and_goes_through_a_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(4)
        port = server.getsockname()[1]
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
        assert hub_reachable() is True
        hub_reachable.cache_clear()
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
        monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{port}")
        assert hub_reachable() is True  # the proxy is what the hub client connects to
    check_backends([("generator", f"hf:{HUB_NAME}")], device="cpu")  # reachable (cached answer): downloads later


def test_run_config_checks_its_own_backends(tiny_models, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    from capstore.runs.config import RunConfig

    cfg = RunConfig(method="mils", dataset="demo", scorer=tiny_models.specs["scorer"],
                    generator=tiny_models.specs["generator"], device="cpu")
    cfg.check_backends()
    cfg.generator_dtype = "bf16"
    with pytest.raises(InputError, match="--generator-dtype 'bf16'"):
        cfg.check_backends()
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(InputError, match="captioner openai:gpt-4o: OPENAI_API_KEY"):
        RunConfig(method="openai", dataset="demo", captioner="openai:gpt-4o").check_backends()
