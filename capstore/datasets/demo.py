"""The embedded demo dataset: 24 scenes of coloured shapes drawn with PIL, 5 references each.

Everything is derived from a fixed seed, so the PNG bytes (and thus the image shas) are the same on
every machine with the same Pillow; importing the demo twice adds nothing. The references describe
what was drawn, so metrics on the demo are meaningful, if easy.
"""

from __future__ import annotations

import io
import random
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from capstore.datasets.importer import ImportSummary, ItemSpec, write_split
from capstore.store.engine import Store

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

SIZE = 224
N_IMAGES = 24
COLOURS = {"red": (220, 40, 40), "blue": (40, 70, 220), "yellow": (240, 210, 30), "green": (40, 170, 60),
           "purple": (140, 50, 180), "orange": (245, 140, 20)}
SHAPES = ("circle", "square", "triangle")
SCENES = {  # name -> (phrase, top colour, bottom colour)
    "sky": ("in a clear blue sky", (135, 200, 245), (175, 220, 250)),
    "grass": ("on a green meadow", (150, 200, 240), (70, 150, 60)),
    "sea": ("above the blue sea", (170, 210, 240), (20, 80, 160)),
    "night": ("in a dark night sky", (10, 15, 50), (25, 30, 70)),
    "plain": ("on a white background", (250, 250, 250), (250, 250, 250)),
}
NUMBERS = {1: "one", 2: "two", 3: "three"}


@dataclass(frozen=True)
class Scene:
    shape: str
    colour: str
    count: int
    scene: str

    def references(self) -> list[str]:
        """Five captions written from what is drawn."""
        noun = self.shape if self.count == 1 else self.shape + "s"
        article = "an" if self.colour[0] in "aeiou" else "a"
        few = f"{article} {self.colour} {noun}" if self.count == 1 else f"{NUMBERS[self.count]} {self.colour} {noun}"
        phrase = SCENES[self.scene][0]
        return [
            f"{few[0].upper()}{few[1:]} {phrase}.",
            f"A simple drawing of {few} {phrase}.",
            f"{NUMBERS[self.count].capitalize()} {self.colour} {'shape' if self.count == 1 else 'shapes'} shaped like {'a ' + self.shape if self.count == 1 else noun} {phrase}.",
            f"An illustration showing {few} {phrase}.",
            f"There {'is' if self.count == 1 else 'are'} {few} {phrase}.",
        ]


def demo_scenes(seed: int = 0) -> list[Scene]:
    """The demo's 24 scenes: every shape and scene, colours and counts drawn from ``seed``."""
    rng = random.Random(seed)
    scenes = []
    for i in range(N_IMAGES):
        scenes.append(Scene(
            shape=SHAPES[i % len(SHAPES)],
            colour=list(COLOURS)[rng.randrange(len(COLOURS))],
            count=1 + rng.randrange(3),
            scene=list(SCENES)[(i // len(SHAPES)) % len(SCENES)],
        ))
    return scenes


def random_scenes(seed: int, n: int) -> list[Scene]:
    """``n`` scenes with every attribute drawn at random from ``seed`` (fresh pictures of the demo's world)."""
    rng = random.Random(seed)
    return [Scene(shape=rng.choice(SHAPES), colour=rng.choice(list(COLOURS)), count=1 + rng.randrange(3),
                  scene=rng.choice(list(SCENES))) for _ in range(n)]


def demo_vocabulary() -> frozenset[str]:
    """Every word the references of any scene can use (lower case, punctuation dropped)."""
    words: set[str] = set()
    for shape in SHAPES:
        for colour in COLOURS:
            for count in NUMBERS:
                for place in SCENES:
                    for ref in Scene(shape, colour, count, place).references():
                        words.update(words_of(ref))
    return frozenset(words)


def words_of(text: str) -> list[str]:
    """The lower-case words of ``text`` (what a vocabulary check compares)."""
    return re.findall(r"[a-z]+", text.lower())


def draw_scene(scene: Scene, seed: int) -> bytes:
    """PNG bytes of ``scene``: a two-tone background and ``count`` shapes at seeded positions."""
    buf = io.BytesIO()
    draw_image(scene, seed).save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def draw_image(scene: Scene, seed: int) -> PILImage:
    """``scene`` drawn as an RGB picture (what ``draw_scene`` encodes; training uses it directly)."""
    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    _, top, bottom = SCENES[scene.scene]
    img = Image.new("RGB", (SIZE, SIZE), top)
    draw = ImageDraw.Draw(img)
    draw.rectangle([0, SIZE * 2 // 3, SIZE, SIZE], fill=bottom)
    if scene.scene == "night":
        for _ in range(25):
            x, y = rng.randrange(SIZE), rng.randrange(SIZE * 2 // 3)
            draw.point((x, y), fill=(255, 255, 220))
    colour = COLOURS[scene.colour]
    r = 38 - 6 * scene.count
    for k in range(scene.count):
        cx = int(SIZE * (k + 1) / (scene.count + 1)) + rng.randrange(-8, 9)
        cy = SIZE // 2 + rng.randrange(-30, 31)
        box = [cx - r, cy - r, cx + r, cy + r]
        if scene.shape == "circle":
            draw.ellipse(box, fill=colour, outline=(0, 0, 0))
        elif scene.shape == "square":
            draw.rectangle(box, fill=colour, outline=(0, 0, 0))
        else:
            draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour, outline=(0, 0, 0))
    return img


def demo_items(seed: int = 0) -> list[ItemSpec]:
    """The demo's items: ``demo-00`` … ``demo-23`` with drawn bytes and references."""
    return [
        ItemSpec(f"demo-{i:02d}", f"demo-{i:02d}.png", data=draw_scene(sc, seed * 1000 + i),
                 references=[(ref, None) for ref in sc.references()])
        for i, sc in enumerate(demo_scenes(seed))
    ]


def make_demo(store: Store, name: str = "demo") -> ImportSummary:
    """Draw the demo dataset and import it as ``name``/``test`` (images kept inside the store)."""
    return write_split(store, name, "test", "capstore demo (drawn with PIL)", demo_items())
