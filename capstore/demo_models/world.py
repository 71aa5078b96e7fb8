"""Training data from the demo's world: freshly drawn pictures and what can truly be said of them.

The scenes come from ``random_scenes`` with the recipe's own seed, never from the demo dataset's
seed, so the models are trained on other pictures than the ones the demo evaluates.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

from capstore.datasets.demo import COLOURS, NUMBERS, SCENES, SHAPES, Scene, draw_image, random_scenes
from capstore.methods.demo_assets import COLOURS as POOL_COLOURS
from capstore.methods.demo_assets import PLACES, THINGS, Phrase

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage


@dataclass(frozen=True)
class Picture:
    scene: Scene
    image: PILImage

    @property
    def truth(self) -> Phrase:
        """The full description of the picture in the pool's grammar."""
        return Phrase(self.scene.count, self.scene.colour, self.scene.shape, SCENES[self.scene.scene][0])


@dataclass(frozen=True)
class Text:
    """A description and what it says, as a phrase (a reference says everything its scene is)."""

    text: str
    says: Phrase


def draw_pictures(seed: int, n: int) -> list[Picture]:
    """``n`` fresh pictures of random scenes, drawn from ``seed``."""
    return [Picture(sc, draw_image(sc, seed * 100_000 + i)) for i, sc in enumerate(random_scenes(seed, n))]


def full_text(picture: Picture, rng: random.Random) -> Text:
    """One of the picture's references, or its whole truth in the pool's grammar."""
    t = picture.truth
    return Text(rng.choice([*picture.scene.references(), t.text()]), t)


def partial_text(picture: Picture, rng: random.Random) -> Text:
    """The picture's count and a random part of its colour, thing and place."""
    t = picture.truth
    keep = [rng.random() < 0.5 for _ in range(3)]
    says = Phrase(t.count, t.colour if keep[0] else None, t.thing if keep[1] else None, t.place if keep[2] else None)
    return Text(says.text(), says)


def near_miss(picture: Picture, rng: random.Random) -> Text:
    """The picture's whole truth with its count or its shape (more rarely its colour) said wrong."""
    t = picture.truth
    what = rng.choice(("count", "count", "thing", "thing", "colour"))
    if what == "count":
        says = Phrase(rng.choice([n for n in (1, 2, 3) if n != t.count]), t.colour, t.thing, t.place)
    elif what == "thing":
        says = Phrase(t.count, t.colour, rng.choice([s for s in SHAPES if s != t.thing]), t.place)
    else:
        says = Phrase(t.count, rng.choice([c for c in COLOURS if c != t.colour]), t.thing, t.place)
    return Text(says.text(), says)


def any_text(rng: random.Random) -> Text:
    """A random description in the pool's grammar, often of things or places that are never drawn."""
    says = Phrase(1 + rng.randrange(3), rng.choice(POOL_COLOURS), rng.choice(THINGS), rng.choice(PLACES))
    return Text(says.text(), says)


ATTRIBUTE_SIZES = (len(NUMBERS), len(SHAPES), len(COLOURS), len(SCENES))  # count, shape, colour, place


def attribute_ids(picture: Picture) -> tuple[int, int, int, int]:
    """What is drawn, as class indices (count, shape, colour, place) for a training-only classifier."""
    sc = picture.scene
    return sc.count - 1, SHAPES.index(sc.shape), list(COLOURS).index(sc.colour), list(SCENES).index(sc.scene)


def attribute_loss(logits, targets):  # type: ignore[no-untyped-def]
    """Cross-entropy of a training-only classifier of what is drawn, summed over the four attributes."""
    import torch.nn.functional as F

    total, start = 0.0, 0
    for k, size in enumerate(ATTRIBUTE_SIZES):
        total = total + F.cross_entropy(logits[:, start : start + size], targets[:, k])
        start += size
    return total


def fit(picture: Picture, says: Phrase) -> int:
    """How much of ``says`` is true of ``picture``: 1 + the named attributes, or 0 if anything is false."""
    t = picture.truth
    if says.count != t.count:
        return 0
    named = [(says.colour, t.colour), (says.thing, t.thing), (says.place, t.place)]
    if any(said is not None and said != true for said, true in named):
        return 0
    return 1 + sum(said is not None for said, _ in named)
