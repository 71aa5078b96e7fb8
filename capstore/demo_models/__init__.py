"""Small models that know the demo's drawn world, trained offline in seconds and cached.

``build_demo_models(root)`` returns the four models the demo runs (a CLIP scorer, a Llama generator
taught MILS's recombination, a BLIP-2 and a LLaVA captioner), each trained from a fixed seed by
its recipe (``clip.py``, ``llm.py``, ``captioners.py``) unless a folder with the recipe's
fingerprint is already under ``root``. The captioners' image towers start from the trained CLIP's,
so they are trained after it; the rest runs in parallel, one process and one thread per recipe
(the same weights on any machine). Unlike ``capstore models tiny`` (random weights, for tests that
need speed), these models give real captions and scores about the drawn world, and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from capstore.demo_models.recipe import Trained, cached_or_train, fingerprint

RECIPES = ("clip", "llm", "blip2", "llava")
NEEDS_CLIP = ("blip2", "llava")


@dataclass
class DemoModels:
    """The demo models' folders (by recipe name), what training them took now, and their backend specs."""

    models: dict[str, Trained] = field(default_factory=dict)

    @property
    def steps(self) -> int:
        """Optimiser steps this call ran (0 when every model came from the cache)."""
        return sum(t.steps for t in self.models.values())

    @property
    def specs(self) -> dict[str, str]:
        return {"scorer": f"open_clip:{self.models['clip'].path}", "generator": f"hf:{self.models['llm'].path}",
                "blip2": f"blip2:{self.models['blip2'].path}", "llava": f"llava:{self.models['llava'].path}"}

    def fingerprint(self) -> str:
        """One short fingerprint of the four recipes (what the report names)."""
        from capstore.store.content import sha256_text

        return sha256_text(":".join(self.models[n].fingerprint for n in RECIPES))[:12]


def recipe_params(name: str, clip_fingerprint: str | None = None) -> dict[str, Any]:
    """The hyperparameters (seed included) of recipe ``name``; a captioner's include the CLIP it starts from."""
    from capstore.demo_models import captioners, clip, llm

    params = {"clip": clip.PARAMS, "llm": llm.PARAMS, "blip2": captioners.BLIP2_PARAMS,
              "llava": captioners.LLAVA_PARAMS}[name]
    return {**params, "vision_from": clip_fingerprint} if name in NEEDS_CLIP else dict(params)


def missing(root: Path) -> list[str]:
    """The recipes without a finished folder under ``root`` (what a build would train)."""
    clip_fp = fingerprint("clip", recipe_params("clip"))
    out = []
    for name in RECIPES:
        fp = fingerprint(name, recipe_params(name, clip_fp))
        if not (root / f"{name}-{fp[:12]}" / "manifest.json").is_file():
            out.append(name)
    return out


def build_demo_models(root: str | Path, *, log: Callable[[str], Any] | None = None,
                      parallel: bool = True) -> DemoModels:
    """The four demo models under ``root``: reused when cached, else trained (``log`` says so, once)."""
    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    todo = missing(root)
    if todo and log:
        log(f"training the demo models ({', '.join(todo)}): once, cached in {root}")
    if len(todo) > 1 and parallel:
        trained = _train_in_processes(root)
    else:
        clip = train_recipe("clip", str(root))
        trained = {"clip": clip, **{n: train_recipe(n, str(root), clip.fingerprint) for n in RECIPES[1:]}}
    models = DemoModels({n: trained[n] for n in RECIPES})
    if log:
        for t in models.models.values():
            if t.steps:
                log(f"  trained {t.name}: {t.steps} steps in {t.seconds:.1f} s -> {t.path.name}")
    return models


def train_recipe(name: str, root: str, clip_fingerprint: str | None = None) -> Trained:
    """Recipe ``name``'s folder under ``root``, trained unless cached (run in a worker process or here)."""
    from capstore.backends.loading_bars import silence_loading_bars
    from capstore.demo_models import captioners, clip, llm

    silence_loading_bars()  # saving and loading inside training is no progress of the user's
    root_path = Path(root)
    if name in NEEDS_CLIP:
        clip_folder = root_path / f"clip-{clip_fingerprint[:12]}"  # type: ignore[index]
        train = {"blip2": captioners.train_blip2, "llava": captioners.train_llava}[name]
        return cached_or_train(root_path, name, recipe_params(name, clip_fingerprint),
                               lambda folder: train(folder, clip_folder))
    train_fn = {"clip": clip.train_clip, "llm": llm.train_llm}[name]
    return cached_or_train(root_path, name, recipe_params(name), train_fn)


def _train_in_processes(root: Path) -> dict[str, Trained]:
    """CLIP and the Llama at once, then the two captioners once the CLIP is done: two worker processes."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # spawn, not fork: a forked child of a process that has used torch's thread pool can hang.
    with ProcessPoolExecutor(max_workers=2, mp_context=multiprocessing.get_context("spawn")) as pool:
        clip_job = pool.submit(train_recipe, "clip", str(root))
        llm_job = pool.submit(train_recipe, "llm", str(root))
        clip = clip_job.result()
        jobs = {n: pool.submit(train_recipe, n, str(root), clip.fingerprint) for n in NEEDS_CLIP}
        return {"clip": clip, "llm": llm_job.result(), **{n: job.result() for n, job in jobs.items()}}
