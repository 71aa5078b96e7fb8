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

# Fields that only change how work is done, not what it gives.
RUNTIME_FIELDS = ("device", "dtype", "batch_images", "lease_seconds", "base_url", "label")


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
    generator_params: dict[str, Any] = field(default_factory=lambda: {"temperature": 0.5, "top_p": 0.9,
                                                                       "max_new_tokens": 512})
    # baselines
    captioner: str | None = None
    captioner_params: dict[str, Any] = field(default_factory=dict)
    num_candidates: int = 1
    # runtime only
    device: str = "auto"
    dtype: str | None = None
    batch_images: int = 16
    lease_seconds: int = 600
    base_url: str | None = None

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

    def result_fields(self) -> dict[str, Any]:
        return {k: v for k, v in self.to_json().items() if k not in RUNTIME_FIELDS}

    def hash(self) -> str:
        """sha256 of the canonical JSON of the result-deciding fields."""
        return hashlib.sha256(canonical_json(self.result_fields()).encode()).hexdigest()


def item_seed(run_seed: int, image_key: str, iteration: int) -> int:
    """The sampling seed of an (image, iteration): from the run's seed, never from its id.

    31 bits, so that it fits every database's INTEGER and every backend's seed argument.
    """
    digest = hashlib.sha256(f"{run_seed}:{image_key}:{iteration}".encode()).hexdigest()
    return int(digest[:8], 16) & 0x7FFFFFFF
