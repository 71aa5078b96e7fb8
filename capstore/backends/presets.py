"""Named defaults as data (``configs/presets.json``): the real models a method uses when none is given.

Users with the weights get MILS's own scorer and generator, the cost study's BLIP-2, LLaVA-1.5 and
GPT-4o without naming them; tests and the demo always name the tiny models explicitly.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from types import MappingProxyType
from typing import Any, Mapping

# MILS's generator sampling (optimization_utils/generator.py: temperature=0.5, top_p=0.9,
# max_new_tokens=3000): the one default of every generator backend, the run config and the CLI.
MILS_SAMPLING: Mapping[str, Any] = MappingProxyType({"temperature": 0.5, "top_p": 0.9, "max_new_tokens": 3000})


@lru_cache(maxsize=1)
def presets() -> dict[str, dict[str, str]]:
    """``{kind: {preset name: BACKEND:MODEL[@TAG]}}``."""
    return json.loads(resources.files("capstore.backends").joinpath("configs/presets.json").read_text())


# The preset a method uses for each kind when the user names no backend of that kind.
METHOD_DEFAULTS: dict[str, dict[str, str]] = {
    "mils": {"scorer": "mils", "generator": "mils"},
    "blip2": {"captioner": "blip2"},
    "llava": {"captioner": "llava"},
    "openai": {"captioner": "gpt-4o"},
}


def default_spec(method: str, kind: str) -> str | None:
    """The documented default backend of ``kind`` for ``method`` (None if it has none)."""
    name = METHOD_DEFAULTS.get(method, {}).get(kind)
    return presets()[kind][name] if name else None
