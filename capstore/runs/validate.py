"""Checking a run's options before anything is written: ranges, and options that do not apply.

Every check raises a one-line InputError naming the option. ``create_run`` calls ``check_config``
before it stores a pool or a run row, so a refused run leaves the store as it was.
"""

from __future__ import annotations

import math
from typing import Iterable

from capstore.errors import InputError
from capstore.runs.config import RunConfig
from capstore.store.ids import MAX_INT64

# Option -> (low, high) inclusive: sane bounds, far beyond any study but below what breaks a model or
# a database (MILS uses 10 iterations, 50 kept, 50 requested, 3000 new tokens).
INT_RANGES: dict[str, tuple[int, int]] = {
    "limit": (1, MAX_INT64),
    "batch_images": (1, 4096),
    "pool_size": (1, 100_000_000),
    "keep": (1, 10_000),
    "requested": (1, 10_000),
    "iterations": (0, 1000),
    "num_candidates": (1, 1000),
    "max_new_tokens": (1, 1_000_000),
    "seed": (0, MAX_INT64),
    "init_from": (1, MAX_INT64),
    "max_model_len": (16, 10_000_000),
    "tensor_parallel": (1, 64),
}

DECODING_BACKENDS = ("blip2", "llava")  # the captioners with decoding presets (transformers generate)


def option_name(field: str) -> str:
    """``batch_images`` → ``--batch-images``."""
    return "--" + field.replace("_", "-")


def check_int(field: str, value: int | None) -> None:
    """``value`` within ``INT_RANGES[field]`` (None means 'not given')."""
    if value is None:
        return
    low, high = INT_RANGES[field]
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InputError(f"{option_name(field)} {value}: expected an integer from {low:,} to {high:,}")


def check_float(field: str, value: float | None, low: float, high: float, *, low_open: bool = False) -> None:
    """A finite number within [low, high] (or (low, high] with ``low_open``)."""
    if value is None:
        return
    ok = isinstance(value, (int, float)) and math.isfinite(value) and value <= high and (
        value > low if low_open else value >= low)
    if not ok:
        bracket = "(" if low_open else "["
        raise InputError(f"{option_name(field)} {value}: expected a number in {bracket}{low:g}, {high:g}]")


def check_applicable(method: str, given: Iterable[str]) -> None:
    """Refuse options given explicitly that ``method`` does not use (they would be silently ignored);
    which method uses which option is its ``MethodSpec.options``."""
    from capstore.methods.registry import method_spec, specific_options, users_of

    given, uses = set(given), method_spec(method).options
    wrong = [option for option in specific_options() if option in given and option not in uses]
    if wrong:
        raise InputError(f"{option_name(wrong[0])} does not apply to --method {method} (it is for {users_of(wrong[0])})")


def check_config(cfg: RunConfig) -> None:
    """Range checks of every numeric option of ``cfg``; one-line InputError on the first bad one."""
    for field in ("limit", "batch_images", "pool_size", "keep", "requested", "iterations", "num_candidates",
                  "seed", "init_from"):
        check_int(field, getattr(cfg, field))
    for params in (cfg.generator_params, cfg.captioner_params):
        check_int("max_new_tokens", params.get("max_new_tokens"))
        check_float("temperature", params.get("temperature"), 0.0, 100.0)
        check_float("top_p", params.get("top_p"), 0.0, 1.0, low_open=True)
    check_backend_options(cfg)
    if cfg.early_stop is not None:
        patience, eps = cfg.early_stop
        if not 1 <= patience <= 1000:
            raise InputError(f"--early-stop {patience}:{eps}: PATIENCE must be from 1 to 1,000")
        if not (math.isfinite(eps) and eps >= 0):
            raise InputError(f"--early-stop {patience}:{eps}: EPS must be a finite number >= 0")


def check_backend_options(cfg: RunConfig) -> None:
    """vLLM's options need a ``vllm:`` generator, ``--decoding`` a BLIP-2 or LLaVA captioner; ranges."""
    from capstore.backends.captioners.decoding import check_decoding, resolve_decoding
    from capstore.runs.config import VLLM_FIELDS

    check_int("max_model_len", cfg.max_model_len)
    check_int("tensor_parallel", cfg.tensor_parallel)
    check_float("gpu_memory_utilization", cfg.gpu_memory_utilization, 0.0, 1.0, low_open=True)
    given = [f for f in VLLM_FIELDS if getattr(cfg, f) is not None]
    if given and not (cfg.generator or "").startswith("vllm:"):
        raise InputError(f"{option_name(given[0])} applies to the vllm: generator; this run's generator is "
                         f"{cfg.generator or 'the default hf: one'} (with `vllm serve`, pass it to the server)")
    if cfg.decoding is not None:
        check_decoding(cfg.decoding)
        backend = (cfg.captioner or cfg.method).partition(":")[0]
        if backend not in DECODING_BACKENDS:
            raise InputError(f"--decoding applies to the {' and '.join(DECODING_BACKENDS)} captioners, "
                             f"not {cfg.captioner or cfg.method}")
        resolve_decoding(cfg.decoding, cfg.num_candidates)
