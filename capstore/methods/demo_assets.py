"""The demo's own MILS inputs: a pool of partial descriptions and a generator prompt, written by capstore.

Every pool line names a count and at most two of colour, thing and place ("two red shapes",
"a circle on a green meadow"), never all three: no single pool line fully describes a drawn picture,
so MILS's iteration 0 can only find part of the truth, and it takes the generator, recombining the
phrases of the best lines ("two red circles on a green meadow"), to find a caption the pool does not
contain. Distractors (things and places that are never drawn) make the pool look like a real one.

(MILS's own pool and prompt are licensed CC BY-NC and are never shipped; users pass them with
``--pool`` and ``--prompt``.)
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import product
from pathlib import Path

DEMO_PROMPT = """Scored descriptions of an image:
{descriptions}Write {requested_number} better ones, numbered.
"""

COLOURS = ("red", "blue", "yellow", "green", "purple", "orange", "white", "black")
THINGS = ("circle", "square", "triangle", "ball", "kite", "star")
PLACES = ("in a clear blue sky", "on a green meadow", "above the blue sea", "in a dark night sky",
          "on a white background", "on a table", "in a city street")
COUNT_WORDS = {1: "a", 2: "two", 3: "three"}


@dataclass(frozen=True)
class Phrase:
    """A description in the pool's grammar: a count and any of colour, thing and place (None: not said)."""

    count: int
    colour: str | None = None
    thing: str | None = None
    place: str | None = None

    def text(self) -> str:
        """``a red circle on a green meadow``, ``two shapes``, ``an orange square``…"""
        noun = (self.thing or "shape") + ("s" if self.count > 1 else "")
        words = [self.colour, noun] if self.colour else [noun]
        article = COUNT_WORDS[self.count]
        if article == "a" and words[0][0] in "aeiou":
            article = "an"
        return " ".join([article, *words, *([self.place] if self.place else [])])

    @property
    def named(self) -> int:
        """How many of colour, thing and place the phrase names."""
        return sum(x is not None for x in (self.colour, self.thing, self.place))


def parse_phrase(text: str) -> Phrase | None:
    """The phrase a line of the pool's grammar says (``Phrase.text`` inverted); None for any other text."""
    words = text.split(" ")
    count = {"a": 1, "an": 1, "two": 2, "three": 3}.get(words[0])
    if count is None or len(words) < 2:
        return None
    rest = " ".join(words[1:])
    place = next((p for p in PLACES if rest.endswith(" " + p)), None)
    if place:
        rest = rest[: -len(place) - 1]
    words = rest.split(" ")
    noun = words[-1][:-1] if count > 1 and words[-1].endswith("s") else words[-1]
    colour = words[0] if len(words) == 2 else None
    if len(words) > 2 or (colour is not None and colour not in COLOURS) or noun not in (*THINGS, "shape"):
        return None
    phrase = Phrase(count, colour, None if noun == "shape" else noun, place)
    return phrase if phrase.text() == text else None


def pool_phrases() -> list[Phrase]:
    """The pool: every count with nothing, one or two of colour, thing and place (504 lines)."""
    out = []
    for count in COUNT_WORDS:
        out.append(Phrase(count))
        out += [Phrase(count, colour=c) for c in COLOURS]
        out += [Phrase(count, thing=t) for t in THINGS]
        out += [Phrase(count, place=p) for p in PLACES]
        out += [Phrase(count, colour=c, thing=t) for c, t in product(COLOURS, THINGS)]
        out += [Phrase(count, colour=c, place=p) for c, p in product(COLOURS, PLACES)]
        out += [Phrase(count, thing=t, place=p) for t, p in product(THINGS, PLACES)]
    return out


def demo_pool_lines() -> list[str]:
    """The pool's lines, in a fixed order."""
    return [p.text() for p in pool_phrases()]


def write_demo_assets(folder: str | Path) -> tuple[Path, Path]:
    """Write ``demo_pool.txt`` and ``demo_prompt.txt`` into ``folder``; returns their paths."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    pool, prompt = out / "demo_pool.txt", out / "demo_prompt.txt"
    pool.write_text("\n".join(demo_pool_lines()) + "\n")
    prompt.write_text(DEMO_PROMPT)
    return pool, prompt
