"""The demo models: cached by recipe fingerprint, and knowing the drawn world (through the normal backends)."""

from __future__ import annotations

import hashlib
import io
import json
import random
from pathlib import Path

import pytest

from capstore.backends.base import ImageRef
from capstore.backends.registry import load_backend
from capstore.backends.tiny_teach import kept_lines
from capstore.demo_models import DemoModels, recipe_params
from capstore.demo_models.recipe import Trained, cached_or_train, fingerprint
from capstore.demo_models.world import Picture, draw_pictures
from capstore.methods.demo_assets import DEMO_PROMPT, PLACES, THINGS, Phrase, parse_phrase, pool_phrases
from capstore.methods.demo_assets import COLOURS as POOL_COLOURS
from capstore.methods.mils import format_prompt, parse_candidates
from capstore.store import open_store
from tests.demo_run import first_demo

HELD_OUT_SEED = 2024  # no recipe draws with this seed, nor the demo dataset


def _models() -> DemoModels:
    from capstore.demo_models import build_demo_models

    models = build_demo_models(first_demo().models)
    assert models.steps == 0  # the first demo trained them
    return models


def _image(picture: Picture) -> ImageRef:
    buf = io.BytesIO()
    picture.image.save(buf, format="PNG")
    return ImageRef(hashlib.sha256(buf.getvalue()).hexdigest(), buf.getvalue())


def test_clip_ranks_the_true_reference_above_another_pictures(tmp_path: Path) -> None:
    pictures = draw_pictures(HELD_OUT_SEED, 100)
    scorer = load_backend("scorer", _models().specs["scorer"], open_store(str(tmp_path / "s.db")), device="cpu")
    images = scorer.encode_images([_image(p) for p in pictures])
    rng = random.Random(0)
    wins = 0
    for i, picture in enumerate(pictures):
        other = rng.choice([p for p in pictures if p.scene != picture.scene])
        style = rng.randrange(5)
        refs = scorer.encode_texts([picture.scene.references()[style], other.scene.references()[style]])
        wins += float(refs[0] @ images[i]) > float(refs[1] @ images[i])
    assert wins >= 90, f"{wins}/100"


def test_clip_prefers_the_whole_truth_to_the_best_pool_line(tmp_path: Path) -> None:
    """What MILS needs of its scorer: a full true description beats every (partial) pool line, mostly."""
    pictures = draw_pictures(HELD_OUT_SEED + 1, 50)
    scorer = load_backend("scorer", _models().specs["scorer"], open_store(str(tmp_path / "s.db")), device="cpu")
    images = scorer.encode_images([_image(p) for p in pictures])
    pool = scorer.encode_texts([p.text() for p in pool_phrases()])
    truths = scorer.encode_texts([p.truth.text() for p in pictures])
    wins = sum(float(truths[i] @ images[i]) > float((pool @ images[i]).max()) for i in range(len(pictures)))
    assert wins >= 40, f"{wins}/50"


def test_llama_recombines_the_kept_phrases_into_new_lines(tmp_path: Path) -> None:
    """Taught on MILS-shaped prompts, the Llama answers with numbered new full descriptions built from the
    kept lines' own phrases (what lets MILS find captions its pool does not contain); a random or an
    untaught model writes no such line."""
    params = recipe_params("llm")
    rng = random.Random(7)
    kept = [kept_lines(rng, params["keep"]) for _ in range(24)]
    gen = load_backend("generator", _models().specs["generator"], open_store(str(tmp_path / "g.db")), device="cpu",
                       temperature=0.5, top_p=0.9, max_new_tokens=80, batch_size=24)
    outputs = gen.generate([format_prompt(DEMO_PROMPT, k, params["requested"]) for k in kept], list(range(24)))
    with_new_line, copied, said = 0, 0, 0
    for lines, out in zip(kept, outputs):
        answer = [p for p in map(parse_phrase, parse_candidates(out.text)) if p is not None]
        prompt = [parse_phrase(text) for text, _ in lines]
        with_new_line += any(p.named == 3 and p not in prompt for p in answer)
        for slot in ("count", "colour", "place"):
            values = {getattr(p, slot) for p in prompt}
            said += sum(getattr(p, slot) is not None for p in answer)
            copied += sum(getattr(p, slot) is not None and getattr(p, slot) in values for p in answer)
    assert with_new_line >= 22, with_new_line
    assert copied >= 0.9 * said > 0, (copied, said)


def test_a_recipe_is_trained_once_and_retrained_when_it_changes(tmp_path: Path) -> None:
    calls: list[Path] = []

    def train(folder: Path) -> int:
        calls.append(folder)
        (folder / "weights").write_text("w")
        return 7

    first = cached_or_train(tmp_path, "clip", {"seed": 1}, train)
    again = cached_or_train(tmp_path, "clip", {"seed": 1}, train)
    assert (first.steps, again.steps, len(calls)) == (7, 0, 1) and first.path == again.path
    assert json.loads((first.path / "manifest.json").read_text())["fingerprint"] == fingerprint("clip", {"seed": 1})
    other = cached_or_train(tmp_path, "clip", {"seed": 2}, train)  # a changed recipe never reuses old weights
    assert other.path != first.path and other.steps == 7
    (other.path / "manifest.json").unlink()  # as a kill before the manifest leaves it
    assert cached_or_train(tmp_path, "clip", {"seed": 2}, train).steps == 7 and len(calls) == 3


def test_a_failed_training_leaves_no_reusable_folder(tmp_path: Path) -> None:
    def broken(folder: Path) -> int:
        (folder / "half").write_text("x")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        cached_or_train(tmp_path, "llm", {"seed": 1}, broken)
    result = cached_or_train(tmp_path, "llm", {"seed": 1}, lambda folder: 3)
    assert isinstance(result, Trained) and result.steps == 3 and not (result.path / "half").exists()


def test_the_pool_never_says_a_whole_picture() -> None:
    """Every pool line leaves out colour, thing or place: only the generator can write the whole truth."""
    phrases = pool_phrases()
    assert all(p.named < 3 for p in phrases)
    assert {p.colour for p in phrases} - {None} == set(POOL_COLOURS)
    assert {p.thing for p in phrases} - {None} == set(THINGS) and {p.place for p in phrases} - {None} == set(PLACES)
    assert [parse_phrase(p.text()) for p in phrases] == phrases
    assert parse_phrase("two red circles on a green meadow") == Phrase(2, "red", "circle", "on a green meadow")
    assert parse_phrase("There are two red circles.") is None and parse_phrase("a") is None
