"""The demo's own MILS inputs: a small description pool and a generator prompt, written by capstore.

(MILS's own pool and prompt are licensed CC BY-NC and are never shipped; users pass them with
``--pool`` and ``--prompt``.)
"""

from __future__ import annotations

from itertools import product
from pathlib import Path

DEMO_PROMPT = """You write short descriptions of an image.
Here are descriptions with their scores; a higher score means the description fits the image better:

{descriptions}

Write {requested_number} new short descriptions that would score higher. Number them "1.", "2.", ...
"""

_COLOURS = ("red", "blue", "yellow", "green", "purple", "orange", "white", "black")
_THINGS = ("circle", "square", "triangle", "ball", "box", "kite", "balloon", "sign")
_PLACES = ("in a clear blue sky", "on a green meadow", "above the blue sea", "in a dark night sky",
           "on a white background", "on a table", "in a city street")


def demo_pool_lines() -> list[str]:
    """A few hundred descriptions of coloured things in places."""
    return [f"a {c} {t} {p}" for c, t, p in product(_COLOURS, _THINGS, _PLACES)]


def write_demo_assets(folder: str | Path) -> tuple[Path, Path]:
    """Write ``demo_pool.txt`` and ``demo_prompt.txt`` into ``folder``; returns their paths."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    pool, prompt = out / "demo_pool.txt", out / "demo_prompt.txt"
    pool.write_text("\n".join(demo_pool_lines()) + "\n")
    prompt.write_text(DEMO_PROMPT)
    return pool, prompt
