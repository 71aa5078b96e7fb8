"""Cache keys for generations: ``key = sha256(canonical_json(parts))``.

``parts`` = {"v": CACHE_VERSION, "backend", "model": model fingerprint, "impl": the backend's
implementation version, "params": output-changing parameters (normalised: sorted keys, floats as
given), "prompt": sha256 of the exact prompt or None, "image": sha256 of the image bytes or None,
"seed"}. The parts are stored beside the key (``generation_cache.params``) so a miss can be
explained. Errors, empty outputs and unseeded sampling are never cached.
"""

from __future__ import annotations

import hashlib
from typing import Any

from capstore.backends.models import canonical_json

CACHE_VERSION = 1


def generation_parts(*, backend: str, model: str, impl: str, params: dict[str, Any],
                     prompt_sha: str | None, image_sha: str | None, seed: int | None) -> dict[str, Any]:
    """The parts that identify one generation request."""
    return {"v": CACHE_VERSION, "backend": backend, "model": model, "impl": impl, "params": dict(sorted(params.items())),
            "prompt": prompt_sha, "image": image_sha, "seed": seed}


def cache_key(parts: dict[str, Any]) -> str:
    """sha256 hex of the canonical JSON of ``parts``."""
    return hashlib.sha256(canonical_json(parts).encode()).hexdigest()


def cacheable(params: dict[str, Any], seed: int | None) -> bool:
    """Sampling without a seed is not reproducible, so it is not cached."""
    sampling = bool(params.get("do_sample", params.get("temperature", 0) not in (0, None)))
    return seed is not None or not sampling
