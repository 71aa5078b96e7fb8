"""vLLM's offline engine in capstore's own process (``vllm:NAME``): GPU only, for a vLLM environment.

**Not pip-installable next to capstore.** Every vLLM release pins its own torch (0.33: torch 2.14.0,
transformers < 5.21; 0.30: torch 2.13.0) and capstore pins torch 2.14.1, so there is no
``capstore[vllm]`` extra. The recommended path is vLLM's OpenAI-compatible server in its own
environment, driven by ``--generator openai:NAME --base-url …`` (``generators/openai.py``). This
backend is for an environment built around vLLM into which capstore was installed by hand; it is
checked here only for its argument plumbing (with a stand-in ``vllm`` module), never run in CI.

What it passes to ``vllm.LLM``: the weights (a hub name's cached snapshot, or the folder), the dtype
(MILS's bfloat16 by default), ``max_model_len`` (8,192 unless given: Llama-3.1's own 131,072 would
reserve ~16 GiB of KV cache for one sequence), ``tensor_parallel_size``, ``gpu_memory_utilization``
(unless given: what is free on the device when the engine starts, less 2 GiB for the scorer, at
most 0.9 — vLLM's own default of 0.92 of the whole GPU refuses to start next to a loaded scorer), and
``device_ids`` for ``--device cuda:N`` (indices into ``CUDA_VISIBLE_DEVICES``; in vLLM 0.30 and 0.33,
refused in one line by a vLLM without it).
Any failure inside ``LLM(...)`` is one line. Device-seconds are the wall time of each ``chat`` call
times the tensor-parallel size: the engine's GPU work runs in vLLM's own worker processes, where
capstore's CUDA events cannot see it.
"""

from __future__ import annotations

import inspect
import time
from functools import partial
from typing import Any, Sequence

from capstore.backends.base import CallContext, Generation
from capstore.backends.cache_keys import cache_key, generation_parts
from capstore.backends.caching import get_generations, put_generations
from capstore.backends.cuda_probe import cuda_devices
from capstore.backends.devices import device_name, resolve_device, resolve_dtype
from capstore.backends.models import register_model, weights_location
from capstore.backends.preflight import check_vllm, check_weights_source
from capstore.backends.presets import MILS_SAMPLING
from capstore.backends.registry import BackendSpec, register
from capstore.backends.sampling import cut_answer
from capstore.backends.usage import record_usage
from capstore.errors import BackendError
from capstore.store.content import sha256_text
from capstore.store.engine import Store

IMPL = "vllm-generator-1"
DEFAULT_MAX_MODEL_LEN = 8192  # MILS's prompts (~2K tokens) + 3,000 new tokens fit with room to spare
SCORER_RESERVE_BYTES = 2 << 30  # left free for the scorer working beside the engine
MAX_MEMORY_FRACTION = 0.9


def memory_fraction(free_bytes: int, total_bytes: int, reserve_bytes: int = SCORER_RESERVE_BYTES) -> float:
    """The ``gpu_memory_utilization`` that fits in what is free now, leaving ``reserve_bytes`` (at most 0.9)."""
    fraction = min(MAX_MEMORY_FRACTION, (free_bytes - reserve_bytes) / total_bytes)
    fraction = int(fraction * 100) / 100  # floor to a hundredth, as a user would write it
    if fraction < 0.05:
        raise BackendError(f"the vllm: generator: only {free_bytes / 2**30:.1f} of {total_bytes / 2**30:.1f} GiB "
                           "are free on the GPU; free memory or pass --gpu-memory-utilization")
    return fraction


def _free_memory(device: str) -> tuple[int, int]:
    """(free, total) bytes of ``device`` (initialises CUDA in this process: vLLM then spawns its workers)."""
    import torch

    free, total = torch.cuda.mem_get_info(torch.device(device))
    return int(free), int(total)


class VLLMGenerator:
    """vllm's offline engine behind the generation cache; the engine starts on the first cache miss."""

    def __init__(self, spec: BackendSpec, store: Store, device: str = "auto", dtype: str | None = None,
                 temperature: float = MILS_SAMPLING["temperature"], top_p: float = MILS_SAMPLING["top_p"],
                 max_new_tokens: int = MILS_SAMPLING["max_new_tokens"], gpu_memory_utilization: float | None = None,
                 max_model_len: int | None = None, tensor_parallel: int | None = None, **_: Any) -> None:
        check_vllm(spec, device)  # vllm importable, a GPU, not --device cpu (without importing either)
        check_weights_source(spec)
        self.spec, self.store = spec, store
        self.device = resolve_device(device)
        self.tensor_parallel = tensor_parallel or 1
        first = int(self.device.partition(":")[2] or 0)
        if first + self.tensor_parallel > len(cuda_devices()):
            raise BackendError(f"--tensor-parallel {self.tensor_parallel} from {self.device} needs "
                               f"{first + self.tensor_parallel} GPUs; this machine has {len(cuda_devices())}")
        self.device_ids = list(range(first, first + self.tensor_parallel)) if ":" in self.device else None
        self.dtype_name = resolve_dtype(dtype, self.device, kind="generator")
        self.gpu_memory_utilization = gpu_memory_utilization
        self.max_model_len = max_model_len or DEFAULT_MAX_MODEL_LEN
        self.params: dict[str, Any] = {"temperature": temperature, "top_p": top_p, "max_new_tokens": max_new_tokens}
        self.model_id, self.fingerprint = register_model(store, kind="generator", backend="vllm", name=str(spec),
                                                         weights=spec.model,
                                                         settings={"dtype": self.dtype_name, "impl": IMPL})
        self.device_name = device_name(self.device)  # the GPU's name, as prices know it
        self.model_calls = 0
        self._llm: Any = None

    def load(self):  # type: ignore[no-untyped-def]
        """Start the engine now instead of on the first cache miss; returns self."""
        _ = self.llm
        return self

    def engine_args(self) -> dict[str, Any]:
        """The keyword arguments of ``vllm.LLM`` (what ``--device``, ``--dtype`` and the vLLM options become)."""
        import vllm

        args: dict[str, Any] = {"model": weights_location(self.spec.model), "dtype": self.dtype_name,
                                "max_model_len": self.max_model_len, "tensor_parallel_size": self.tensor_parallel}
        args["gpu_memory_utilization"] = self.gpu_memory_utilization or memory_fraction(*_free_memory(self.device))
        if self.device_ids is not None:
            if "device_ids" not in inspect.signature(vllm.EngineArgs).parameters:
                raise BackendError(f"--device {self.device}: this vllm ({getattr(vllm, '__version__', '?')}) cannot be "
                                   "given a GPU (its EngineArgs has no device_ids); set CUDA_VISIBLE_DEVICES instead")
            args["device_ids"] = self.device_ids
        return args

    @property
    def llm(self):  # type: ignore[no-untyped-def]
        if self._llm is None:
            args = self.engine_args()
            import vllm

            try:
                self._llm = vllm.LLM(**args)
            except Exception as exc:  # vLLM's errors span pages (and are often raised in a worker): one line
                lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
                reason = lines[0] if lines else type(exc).__name__
                raise BackendError(f"cannot start vllm for generator {self.spec} on {self.device}: "
                                   f"{type(exc).__name__}: {reason[:500]}") from exc
        return self._llm

    def generate(self, prompts: Sequence[str], seeds: Sequence[int], ctx: CallContext = CallContext()) -> list[Generation]:
        parts = [generation_parts(backend="vllm", model=self.fingerprint, impl=IMPL, params=self.params,
                                  prompt_sha=sha256_text(p), image_sha=None, seed=s) for p, s in zip(prompts, seeds)]
        keys = [cache_key(p) for p in parts]
        found = get_generations(self.store, keys)
        todo = [i for i, k in enumerate(keys) if k not in found]
        start, device_seconds = time.perf_counter(), 0.0
        if todo:
            import vllm

            llm = self.llm  # starts the engine (outside the device time below)
            start = time.perf_counter()
            sampling = [vllm.SamplingParams(temperature=self.params["temperature"], top_p=self.params["top_p"],
                                            max_tokens=self.params["max_new_tokens"], seed=seeds[i]) for i in todo]
            messages = [[{"role": "user", "content": prompts[i]}] for i in todo]
            outs = llm.chat(messages, sampling_params=sampling, use_tqdm=False)
            self.model_calls += 1
            # vllm's engine synchronises before returning outputs; the cache write below is not device time.
            # With tensor parallelism every one of the GPUs is held for that time.
            device_seconds = (time.perf_counter() - start) * self.tensor_parallel
            fresh = [_generation(o) for o in outs]
            ctx.store_write(partial(
                put_generations, self.store, self.model_id, [(keys[i], parts[i], g) for i, g in zip(todo, fresh)]))
            found.update((keys[i], g) for i, g in zip(todo, fresh))
        wall = time.perf_counter() - start
        new = [found[keys[i]] for i in todo]
        ctx.store_write(partial(
            record_usage, self.store, run_id=ctx.run_id, stage=ctx.stage or "generate", model_id=self.model_id,
            device_type="cuda", device_name=self.device_name, device_seconds=device_seconds, wall_seconds=wall,
            tokens_in=sum(g.tokens_in for g in new), tokens_out=sum(g.tokens_out for g in new), items=len(prompts),
            calls=1 if todo else 0, cached=len(prompts) - len(todo), worker=ctx.worker))
        return [found[k] for k in keys]


def _generation(output: Any) -> Generation:
    """One vLLM ``RequestOutput`` as a Generation; an answer cut by ``max_tokens`` loses its unfinished line."""
    first = output.outputs[0]
    return cut_answer(first.text, first.finish_reason == "length", tokens_in=len(output.prompt_token_ids or ()),
                      tokens_out=len(first.token_ids))


@register("generator", "vllm")
def build(spec: BackendSpec, store: Store, **options: Any) -> VLLMGenerator:
    return VLLMGenerator(spec, store, **options)
