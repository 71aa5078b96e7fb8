"""Methods by name, as backends are: which worker runs a method, what it needs, what media it takes.

The engine asks this registry for a run's worker (``worker_class``) and its steps per item; ``create_run``
for the method's media. Workers are imported only when a run of their method works. Adding a method
= one worker module (``process(states, attempts)`` over a claimed batch, see ``capstore.runs.engine``)
+ its line in ``METHOD_SPECS`` + its test.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from capstore.errors import InputError

ALL_MEDIA = ("image", "video", "audio")

# The run options (RunConfig fields) that only some methods use; a method refuses the others when given.
MILS_OPTIONS = ("generator", "pool", "pool_size", "prompt", "iterations", "keep", "requested", "early_stop",
                "init_from", "scorer_dtype", "generator_dtype", "gpu_memory_utilization", "max_model_len",
                "tensor_parallel")
BASELINE_OPTIONS = ("captioner", "num_candidates", "decoding")


@dataclass(frozen=True)
class MethodSpec:
    """What the engine and ``create_run`` need to know of a method."""

    name: str
    worker: str  # "module:Class", built as Class(store, run_id, cfg, worker_id, backends, on_step)
    iterative: bool  # steps per item: the run's iterations + 1 (MILS); else one
    media: tuple[str, ...] = ("image",)  # the kinds of media its items may hold
    writer: str = "captioner"  # the backend kind that writes the captions (--base-url applies to it)
    backends: tuple[str, ...] = ("captioner", "scorer")  # the kinds a run may use (a baseline's scorer: if given)
    pool: bool = False  # runs need --pool and --prompt, and always a scorer (its default when unnamed)
    options: tuple[str, ...] = BASELINE_OPTIONS  # the method-specific run options it uses

    def steps_per_item(self, iterations: int) -> int:
        return iterations + 1 if self.iterative else 1


_BASELINE = "capstore.runs.baseline_worker:BaselineWorker"
METHOD_SPECS: dict[str, MethodSpec] = {
    # One loop for images, videos and audio clips: the scorer and the media loader follow the items' kind.
    "mils": MethodSpec("mils", "capstore.runs.mils_worker:MilsWorker", iterative=True, media=ALL_MEDIA,
                       writer="generator", backends=("scorer", "generator"), pool=True, options=MILS_OPTIONS),
    "blip2": MethodSpec("blip2", _BASELINE, iterative=False),
    "llava": MethodSpec("llava", _BASELINE, iterative=False, options=(*BASELINE_OPTIONS, "adapter")),
    "openai": MethodSpec("openai", _BASELINE, iterative=False),
    "fake": MethodSpec("fake", _BASELINE, iterative=False),  # the scripted test captioner
}


def specific_options() -> tuple[str, ...]:
    """Every option some method uses and another does not, in a fixed order."""
    return tuple(dict.fromkeys(o for spec in METHOD_SPECS.values() for o in spec.options))


def users_of(option: str) -> str:
    """Who uses ``option``, for messages: ``MILS``, ``the single-pass baselines`` or method names."""
    names = [name for name, spec in METHOD_SPECS.items() if option in spec.options]
    if names == ["mils"]:
        return "MILS"
    if set(names) == {name for name, spec in METHOD_SPECS.items() if not spec.iterative}:
        return "the single-pass baselines"
    return ", ".join(names)


def method_spec(name: str) -> MethodSpec:
    """The method called ``name``; InputError listing the known ones."""
    if name not in METHOD_SPECS:
        raise InputError(f"unknown method {name!r}; available: {', '.join(METHOD_SPECS)}")
    return METHOD_SPECS[name]


def worker_class(name: str) -> Any:
    """The worker class of method ``name`` (its module imported now)."""
    module, _, cls = method_spec(name).worker.partition(":")
    return getattr(importlib.import_module(module), cls)
