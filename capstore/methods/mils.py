"""MILS's prompt and answer formats, and its keep-the-best steps, as the original
(facebookresearch/MILS, ``optimization_utils/generator.py`` and ``main_image_captioning.py``).

Prompt: the template's ``{descriptions}`` is replaced by the kept candidates as
``f"{score:.3f}: {text}"`` lines, best first, and ``{requested_number}`` by the number asked for.
Answer: MILS's ``strip_line_counters``, line for line (see ``parse_candidates``).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from capstore.errors import InputError


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
    """The candidate captions in a generator answer (possibly none): MILS's ``strip_line_counters``.

    Lines are split on ``\\n`` only. A line counts when ``". "`` occurs in its first 5 characters
    (``1. ``, ``10. ``, ``100. ``, but also ``  1. `` or ``Mr. X``); its text starts 2 characters after
    the line's *first* ``.``, is cut at the first ``(``, stripped, then loses ``<|endoftext|>``,
    ``<pad>`` and every ``!`` (after the strip, so ``"a cat !"`` gives ``"a cat "``). Empty texts
    and repeats are dropped. MILS returns a set; this returns the same texts in first-seen order.
    """
    cleaned: dict[str, None] = {}
    for line in output.split("\n"):
        if ". " in line[:5]:
            text = line[line.find(".") + 2 :].split("(")[0].strip().replace("<|endoftext|>", "").replace("<pad>", "")
            text = text.replace("!", "")
            if text:
                cleaned.setdefault(text, None)
    return list(cleaned)


def pool_top(lines: Sequence[str], scores: np.ndarray, keep: int) -> list[tuple[str, float]]:
    """Iteration 0 as MILS keeps it: the ``keep`` best pool *positions*, best first, equal scores in
    pool order (MILS sorts the (score, line) pairs with Python's stable sort), duplicates included:
    a line that appears n times among them takes n of the ``keep`` places. ``dict(...)`` of the
    result is the kept set (fewer than ``keep`` distinct lines when the pool repeats itself)."""
    negated = -np.asarray(scores, dtype=np.float64)
    # Only the lines that can be among the best are sorted (28.7K lines a stable sort each: 2.7 ms an
    # image; this: 0.5 ms): those scoring at least the keep-th best, in pool order, so a stable sort
    # of them keeps ties in pool order as the full sort does.
    cutoff = np.partition(negated, keep - 1)[keep - 1] if 0 < keep < len(negated) else np.nan
    # A NaN cutoff (fewer numbers than places, or nothing to cut): every line is sorted.
    best = np.arange(len(negated)) if np.isnan(cutoff) else np.flatnonzero(negated <= cutoff)
    order = best[np.argsort(negated[best], kind="stable")][:keep]
    return [(lines[j], float(scores[j])) for j in order]


def keep_top(candidates: dict[str, float], keep: int) -> list[tuple[str, float]]:
    """The ``keep`` best (text, score) pairs, best first; ties broken by text for determinism."""
    return sorted(candidates.items(), key=lambda ts: (-ts[1], ts[0]))[:keep]


def should_stop(best_history: Sequence[float], patience: int, eps: float) -> bool:
    """Early stop: the best score has not improved by more than ``eps`` over the last ``patience`` iterations."""
    if patience <= 0 or len(best_history) <= patience:
        return False
    return best_history[-1] - best_history[-1 - patience] <= eps
