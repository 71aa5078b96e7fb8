"""The in-process ``vllm:`` generator's argument plumbing, with a stand-in ``vllm`` module.

This proves only that capstore passes the right arguments to ``vllm.LLM`` / ``SamplingParams`` and
reads their outputs right; whether vLLM itself runs is for ``benchmarks/gpu_backends.py`` on a GPU.
"""

from __future__ import annotations

import importlib.machinery
import sys
import time
import types
from dataclasses import dataclass, field
from typing import Any

import pytest
from sqlalchemy import select

from capstore.backends.cuda_probe import CudaDevice
from capstore.backends.registry import load_backend
from capstore.errors import BackendError
from capstore.store.schema import UsageEvent

GIB = 2**30


@dataclass
class FakeOutput:
    text: str
    token_ids: list[int]
    finish_reason: str


@dataclass
class FakeRequestOutput:
    prompt_token_ids: list[int]
    outputs: list[FakeOutput]


@dataclass
class FakeVllm:
    """What the stand-in module saw: the engines' keyword arguments and each chat call's requests."""

    engines: list[dict[str, Any]] = field(default_factory=list)
    chats: list[tuple[list[Any], list[Any]]] = field(default_factory=list)
    fail_with: Exception | None = None
    device_ids: bool = True
    answer: str = "1. a red circle\n2. a blue square"
    finish_reason: str = "stop"
    seconds: float = 0.0  # how long a chat call takes


def _module(state: FakeVllm) -> types.ModuleType:
    mod = types.ModuleType("vllm")
    mod.__spec__ = importlib.machinery.ModuleSpec("vllm", None)
    mod.__version__ = "0.33.0-fake"

    class SamplingParams:
        def __init__(self, **kwargs: Any) -> None:
            self.kwargs = kwargs

    class LLM:
        def __init__(self, **kwargs: Any) -> None:
            if state.fail_with is not None:
                raise state.fail_with
            state.engines.append(kwargs)

        def chat(self, messages: list[Any], sampling_params: list[Any], use_tqdm: bool = True) -> list[Any]:
            state.chats.append((messages, sampling_params))
            time.sleep(state.seconds)
            return [FakeRequestOutput(list(range(20 + i)), [FakeOutput(state.answer, list(range(9)), state.finish_reason)])
                    for i, _ in enumerate(messages)]

    def engine_args(model: str, device_ids: list[int] | None = None, **kwargs: Any) -> None: ...

    def engine_args_old(model: str, **kwargs: Any) -> None: ...

    mod.SamplingParams, mod.LLM = SamplingParams, LLM
    mod.EngineArgs = engine_args if state.device_ids else engine_args_old
    return mod


@pytest.fixture
def fake_vllm(monkeypatch: pytest.MonkeyPatch) -> FakeVllm:
    """A ``vllm`` module that records its calls, four H200s as the CUDA driver would report them, 40 of
    80 GiB free on each."""
    from capstore.backends import devices, preflight
    from capstore.backends.generators import vllm as backend

    state = FakeVllm()
    monkeypatch.setitem(sys.modules, "vllm", _module(state))
    gpus = tuple(CudaDevice(i, "NVIDIA H200", (9, 0)) for i in range(4))
    for module in (devices, preflight, backend):
        monkeypatch.setattr(module, "cuda_devices", lambda: gpus)
    monkeypatch.setattr(backend, "_free_memory", lambda device: (40 * GIB, 80 * GIB))
    return state


def _gen(store, folder, **options):  # type: ignore[no-untyped-def]
    return load_backend("generator", f"vllm:{folder}", store, **{"device": "cuda", **options})


def test_defaults_fit_beside_the_scorer(demo_store, tiny_models, fake_vllm: FakeVllm) -> None:  # type: ignore[no-untyped-def]
    gen = _gen(demo_store, tiny_models.llm)
    assert fake_vllm.engines == []  # the engine starts on the first cache miss, not when built
    gen.generate(["p1", "p2"], [7, 8])
    (engine,) = fake_vllm.engines
    assert engine == {"model": str(tiny_models.llm), "dtype": "bfloat16", "max_model_len": 8192,
                      "tensor_parallel_size": 1, "gpu_memory_utilization": 0.47}  # (40 - 2) / 80, floored
    messages, sampling = fake_vllm.chats[0]
    assert messages == [[{"role": "user", "content": "p1"}], [{"role": "user", "content": "p2"}]]
    assert [s.kwargs for s in sampling] == [{"temperature": 0.5, "top_p": 0.9, "max_tokens": 3000, "seed": seed}
                                            for seed in (7, 8)]


def test_options_and_the_device_reach_the_engine(demo_store, tiny_models, fake_vllm: FakeVllm) -> None:  # type: ignore[no-untyped-def]
    gen = _gen(demo_store, tiny_models.llm, device="cuda:1", dtype="float16", gpu_memory_utilization=0.6,
               max_model_len=4096, tensor_parallel=2)
    fake_vllm.seconds = 0.05
    out = gen.generate(["p"], [1])
    (engine,) = fake_vllm.engines
    assert (engine["device_ids"], engine["tensor_parallel_size"], engine["gpu_memory_utilization"],
            engine["max_model_len"], engine["dtype"]) == ([1, 2], 2, 0.6, 4096, "float16")
    assert out[0].tokens_in == 20 and out[0].tokens_out == 9 and not out[0].truncated
    with demo_store.read() as s:
        event = s.scalars(select(UsageEvent).order_by(UsageEvent.id.desc())).first()
    assert (event.device_type, event.device_name, event.calls) == ("cuda", "NVIDIA H200", 1)
    assert 2 * 0.05 <= event.device_seconds <= 2 * event.wall_seconds  # two GPUs held for the chat call


def test_run_config_passes_the_vllm_options(demo_store, tiny_models, fake_vllm: FakeVllm) -> None:  # type: ignore[no-untyped-def]
    from capstore.runs.config import RunConfig

    cfg = RunConfig(method="mils", dataset="demo", generator=f"vllm:{tiny_models.llm}", device="cuda:2",
                    tensor_parallel=2, max_model_len=16384, gpu_memory_utilization=0.5)
    options = cfg.backend_options("generator")
    assert options == {"device": "cuda:2", "dtype": None, "tensor_parallel": 2, "max_model_len": 16384,
                       "gpu_memory_utilization": 0.5}
    assert cfg.hash() == RunConfig(method="mils", dataset="demo", generator=f"vllm:{tiny_models.llm}").hash()
    load_backend("generator", cfg.generator, demo_store, **options, **cfg.generator_params).load()
    assert fake_vllm.engines[0]["device_ids"] == [2, 3] and fake_vllm.engines[0]["max_model_len"] == 16384


def test_an_answer_cut_by_max_tokens_loses_its_last_line(demo_store, tiny_models, fake_vllm: FakeVllm) -> None:  # type: ignore[no-untyped-def]
    fake_vllm.answer, fake_vllm.finish_reason = "1. a red circle\n2. a blue sq", "length"
    gen = _gen(demo_store, tiny_models.llm)
    (out,) = gen.generate(["p"], [1])
    assert (out.text, out.output, out.truncated) == ("1. a red circle", "1. a red circle\n2. a blue sq", True)
    (again,) = gen.generate(["p"], [1])
    assert again.cached and (again.text, again.truncated) == ("1. a red circle", True) and len(fake_vllm.chats) == 1


def test_a_failure_inside_llm_is_one_line(demo_store, tiny_models, fake_vllm: FakeVllm) -> None:  # type: ignore[no-untyped-def]
    fake_vllm.fail_with = ValueError("Free memory on device (3.1/79.2 GiB) on startup is less than desired GPU "
                                     "memory utilization (0.9, 71.3 GiB).\nDecrease GPU memory utilization\n  ...")
    gen = _gen(demo_store, tiny_models.llm)
    with pytest.raises(BackendError) as err:
        gen.generate(["p"], [1])
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"cannot start vllm for generator vllm:{tiny_models.llm} on cuda")
    assert "ValueError: Free memory on device" in message


def test_a_gpu_index_needs_a_vllm_that_takes_one(demo_store, tiny_models, fake_vllm: FakeVllm) -> None:  # type: ignore[no-untyped-def]
    fake_vllm.device_ids = False
    import vllm

    vllm.EngineArgs = _module(fake_vllm).EngineArgs
    with pytest.raises(BackendError, match="cannot be given a GPU .* set CUDA_VISIBLE_DEVICES"):
        _gen(demo_store, tiny_models.llm, device="cuda:1").load()
    _gen(demo_store, tiny_models.llm, device="cuda").load()  # no index: nothing to pass
    assert "device_ids" not in fake_vllm.engines[0]


def test_refusals_before_any_engine(demo_store, tiny_models, fake_vllm: FakeVllm) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(BackendError, match="--tensor-parallel 4 from cuda:1 needs 5 GPUs; this machine has 4"):
        _gen(demo_store, tiny_models.llm, device="cuda:1", tensor_parallel=4)
    with pytest.raises(BackendError, match="CUDA only, not --device cpu"):
        _gen(demo_store, tiny_models.llm, device="cpu")
    assert fake_vllm.engines == []


def test_memory_fraction() -> None:
    from capstore.backends.generators.vllm import memory_fraction

    assert memory_fraction(80 * GIB, 80 * GIB) == 0.9
    assert memory_fraction(10 * GIB, 80 * GIB) == 0.1
    with pytest.raises(BackendError, match="only 2.5 of 80.0 GiB are free"):
        memory_fraction(int(2.5 * GIB), 80 * GIB)


def test_without_vllm_the_generator_is_refused_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)  # not importable, whatever this environment has
    from capstore.backends.preflight import check_vllm
    from capstore.backends.registry import parse_spec

    with pytest.raises(BackendError, match="vllm serve NAME.*--generator openai:NAME --base-url"):
        check_vllm(parse_spec("generator", "vllm:meta-llama/Meta-Llama-3.1-8B-Instruct"))
