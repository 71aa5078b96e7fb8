"""MILS's prompt and answer formats, and its keep-the-best step, exactly as the original.

Prompt: the template's ``{descriptions}`` is replaced by the kept candidates as
``f"{score:.3f}: {text}"`` lines, best first, and ``{requested_number}`` by the number asked for.
Answer: lines of the form ``N. text``; the text is cut at the first ``(``, ``!`` removed, stripped,
duplicates dropped (first occurrence kept).
"""

from __future__ import annotations

import re
from typing import Sequence

from capstore.errors import InputError

_LINE = re.compile(r"^\s*\d+\s*\.\s*(.+)$")


def check_template(template: str, source: str) -> None:
    """A MILS prompt must contain ``{descriptions}``."""
    if "{descriptions}" not in template:
        raise InputError(f"prompt {source} has no {{descriptions}} placeholder")


def format_prompt(template: str, kept: Sequence[tuple[str, float]], requested: int) -> str:
    """The generator prompt for one image from its kept (text, score) pairs (any order)."""
    ranked = sorted(kept, key=lambda ts: -ts[1])
    lines = "".join(f"{score:.3f}: {text}\n" for text, score in ranked)
    return template.replace("{descriptions}", lines).replace("{requested_number}", str(requested))


def parse_candidates(output: str) -> list[str]:
    """The candidate captions in a generator answer (possibly none)."""
    seen: dict[str, None] = {}
    for line in output.splitlines():
        m = _LINE.match(line)
        if not m:
            continue
        text = m.group(1).split("(")[0].replace("!", "").strip()
        if text:
            seen.setdefault(text, None)
    return list(seen)


def keep_top(candidates: dict[str, float], keep: int) -> list[tuple[str, float]]:
    """The ``keep`` best (text, score) pairs, best first; ties broken by text for determinism."""
    return sorted(candidates.items(), key=lambda ts: (-ts[1], ts[0]))[:keep]


def should_stop(best_history: Sequence[float], patience: int, eps: float) -> bool:
    """Early stop: the best score has not improved by more than ``eps`` over the last ``patience`` iterations."""
    if patience <= 0 or len(best_history) <= patience:
        return False
    return best_history[-1] - best_history[-1 - patience] <= eps
