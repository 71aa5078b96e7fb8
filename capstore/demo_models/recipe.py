"""What every demo-model recipe shares: its fingerprint, its cache folder, pinned threads, step counts.

A trained model is cached in ``<models>/<name>-<fingerprint[:12]>/`` with a ``manifest.json``
(the recipe, its full fingerprint, training steps and seconds) written last, so a half-written
folder is trained again and a finished one is reused as is. The fingerprint covers the recipe's
hyperparameters and seed and the source code that decides what it trains (the drawn world, the
pool's grammar, the tokenizer, the recipe itself; any edit retrains), so a changed recipe never
reuses old weights.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Iterator

# Modules whose code decides what each recipe trains (beyond its own hyperparameters).
_COMMON = ("datasets/demo.py", "methods/demo_assets.py", "backends/tiny.py", "demo_models/recipe.py",
           "demo_models/tokenizer.py", "demo_models/world.py")
SOURCES = {
    "clip": (*_COMMON, "demo_models/clip.py"),
    "llm": (*_COMMON, "methods/mils.py", "backends/tiny_teach.py", "demo_models/llm.py"),
    "blip2": (*_COMMON, "demo_models/captioners.py"),
    "llava": (*_COMMON, "demo_models/captioners.py", "backends/captioners/llava.py"),
}
TRAIN_THREADS = 1  # one thread: the same weights on any machine, whatever its core count


@dataclass(frozen=True)
class Trained:
    """A cached model folder and what making it took (0 steps when it came from the cache)."""

    name: str
    path: Path
    fingerprint: str
    steps: int
    seconds: float


def code_version(name: str) -> str:
    """sha256 of the source files that decide what recipe ``name`` trains."""
    root = resources.files("capstore")
    digest = hashlib.sha256()
    for rel in SOURCES[name]:
        digest.update(rel.encode() + b"\0" + root.joinpath(rel).read_bytes() + b"\0")
    return digest.hexdigest()


def fingerprint(name: str, params: dict[str, Any]) -> str:
    """The recipe's identity: its name, hyperparameters (seed included) and its code's version."""
    blob = json.dumps({"name": name, "params": params, "code": code_version(name)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def cached_or_train(root: Path, name: str, params: dict[str, Any], train: Callable[[Path], int]) -> Trained:
    """The folder of recipe ``name`` under ``root``, trained by ``train(folder) -> steps`` unless cached.

    A lock file beside the folder makes a second demo on the same models folder wait for the first's
    training and then reuse it, instead of training into the same folder at once.
    """
    from filelock import FileLock

    fp = fingerprint(name, params)
    folder = root / f"{name}-{fp[:12]}"
    manifest = folder / "manifest.json"
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / f".{folder.name}.lock")):
        if manifest.is_file() and json.loads(manifest.read_text()).get("fingerprint") == fp:
            return Trained(name, folder, fp, 0, 0.0)
        shutil.rmtree(folder, ignore_errors=True)  # a half-written folder from a killed run
        folder.mkdir(parents=True)
        start = time.perf_counter()
        with pinned_threads():
            steps = train(folder)
        seconds = time.perf_counter() - start
        manifest.write_text(json.dumps({"name": name, "fingerprint": fp, "params": params, "steps": steps,
                                        "seconds": round(seconds, 2)}, indent=2, sort_keys=True))  # written last
    return Trained(name, folder, fp, steps, seconds)


@contextmanager
def pinned_threads(n: int = TRAIN_THREADS) -> Iterator[None]:
    """Run torch on ``n`` threads inside the block (results do not depend on the machine's cores)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def seed_everything(seed: int) -> None:
    """Seed torch (and thus every init and dropout) for a deterministic recipe."""
    import torch

    torch.manual_seed(seed)
