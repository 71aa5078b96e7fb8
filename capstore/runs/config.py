"""A run's configuration: everything that decides its results, hashed canonically.

The hash covers what changes outputs (method, dataset/split, item limit, backends, sampling
parameters, pool content, prompt text, MILS settings, seed), not how the work is done (device,
batch sizes, workers). Two runs with the same hash produce the same results, so the second is
served entirely from the caches.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from typing import Any

from capstore.backends.models import canonical_json
from capstore.backends.presets import MILS_SAMPLING

# Fields that only change how work is done, not what it gives. (A dtype does change outputs, but
# the effective dtype is part of each model's fingerprint, so caches never mix dtypes.)
RUNTIME_FIELDS = ("device", "dtype", "scorer_dtype", "generator_dtype", "batch_images", "lease_seconds",
                  "base_url", "label", "gpu_memory_utilization", "max_model_len", "tensor_parallel")
# Result fields added later: hashed only when set, so that the runs made before them keep their hash.
LATER_FIELDS = ("decoding",)

# Options of the vllm: generator only (see capstore.backends.generators.vllm).
VLLM_FIELDS = ("gpu_memory_utilization", "max_model_len", "tensor_parallel")

# The generator's sampling defaults are MILS's (temperature 0.5, top-p 0.9, 3,000 new tokens); the
# CLI takes its defaults from here.
DEFAULT_MAX_NEW_TOKENS: int = MILS_SAMPLING["max_new_tokens"]


def default_generator_params() -> dict[str, Any]:
    """MILS's sampling parameters, a fresh dict each call."""
    return dict(MILS_SAMPLING)


@dataclass
class RunConfig:
    method: str
    dataset: str
    split: str | None = None
    limit: int | None = None  # first N items by external id, for small runs
    seed: int = 0
    label: str | None = None
    # MILS
    scorer: str | None = None
    generator: str | None = None
    pool_sha: str | None = None
    pool_name: str | None = None
    pool_size: int | None = None  # None = all
    prompt: str | None = None  # the template text itself
    iterations: int = 10
    keep: int = 50
    requested: int = 50
    early_stop: tuple[int, float] | None = None
    init_from: int | None = None
    generator_params: dict[str, Any] = field(default_factory=default_generator_params)
    # baselines
    captioner: str | None = None
    captioner_params: dict[str, Any] = field(default_factory=dict)
    num_candidates: int = 1
    decoding: str | None = None  # BLIP-2/LLaVA preset (greedy, lavis-coco, sample; None: greedy, or sample
    #                              with several candidates): see capstore.backends.captioners.decoding
    # runtime only
    device: str = "auto"
    dtype: str | None = None  # every backend's dtype (None/auto: each kind's default, see devices.default_dtype)
    scorer_dtype: str | None = None  # overrides dtype for the scorer (MILS: float32)
    generator_dtype: str | None = None  # overrides dtype for the generator (MILS: bfloat16)
    batch_images: int = 16
    lease_seconds: int = 60  # renewed by the heartbeat every lease/3 (capstore.runs.heartbeat)
    base_url: str | None = None
    # the vllm: generator (None: its defaults: free memory less 2 GiB, 8,192 tokens, 1 GPU)
    gpu_memory_utilization: float | None = None
    max_model_len: int | None = None
    tensor_parallel: int | None = None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        if self.early_stop is not None:
            data["early_stop"] = list(self.early_stop)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "RunConfig":
        data = dict(data)
        if data.get("early_stop") is not None:
            data["early_stop"] = tuple(data["early_stop"])
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

    def dtype_for(self, kind: str) -> str | None:
        """The dtype asked for the backend of ``kind`` (None: that kind's default on the device)."""
        specific = {"scorer": self.scorer_dtype, "generator": self.generator_dtype}.get(kind)
        return specific or self.dtype

    def backend_options(self, kind: str) -> dict[str, Any]:
        """Device, dtype and kind-specific options for ``load_backend(kind, …)`` (vLLM's for a
        generator, the decoding preset for a captioner; only those that are set)."""
        options: dict[str, Any] = {"device": self.device, "dtype": self.dtype_for(kind)}
        specific = {"generator": VLLM_FIELDS, "captioner": ("decoding",)}.get(kind, ())
        options.update((name, getattr(self, name)) for name in specific if getattr(self, name) is not None)
        return options

    def backend_specs(self) -> list[tuple[str, str]]:
        """(kind, spec) of every backend this run uses."""
        from capstore.methods.registry import method_spec

        return [(kind, spec) for kind in method_spec(self.method).backends if (spec := getattr(self, kind))]

    def check_backends(self) -> None:
        """Refuse, before the run is created, backends that cannot work here (one-line error; see
        ``capstore.backends.preflight``). Call it once the default backends are filled in."""
        from capstore.backends.preflight import check_backends

        check_backends(self.backend_specs(), device=self.device, dtype=self.dtype, scorer_dtype=self.scorer_dtype,
                       generator_dtype=self.generator_dtype, base_url=self.base_url,
                       adapter=self.captioner_params.get("adapter"))

    def result_fields(self) -> dict[str, Any]:
        return {k: v for k, v in self.to_json().items()
                if k not in RUNTIME_FIELDS and not (k in LATER_FIELDS and v is None)}

    def hash(self) -> str:
        """sha256 of the canonical JSON of the result-deciding fields."""
        return hashlib.sha256(canonical_json(self.result_fields()).encode()).hexdigest()


def item_seed(run_seed: int, image_key: str, iteration: int) -> int:
    """The sampling seed of an (image, iteration): from the run's seed, never from its id.

    31 bits, so that it fits every database's INTEGER and every backend's seed argument.
    """
    digest = hashlib.sha256(f"{run_seed}:{image_key}:{iteration}".encode()).hexdigest()
    return int(digest[:8], 16) & 0x7FFFFFFF
