"""What the benchmarks share: shared-data paths, tiny models, image datasets, usage sums, JSON output.

Benchmarks run as scripts (``.venv/bin/python benchmarks/NAME.py``), so this module is imported by
its plain name. Shared data is read from ``CAPSTORE_SHARED`` or ``../shared`` beside the project and
never copied into it.
"""

from __future__ import annotations

import io
import json
import os
import platform
import random
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

REPO = Path(__file__).resolve().parents[1]
POOL = "data/mils/image_descriptions_per_class.txt"
PROMPT = "data/mils/image_captioning_shorter.txt"
COCO_IMAGES = "data/coco-karpathy-test/images"
PG_DEFAULT = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def shared_dir() -> Path:
    """``CAPSTORE_SHARED`` or ``../shared`` beside the project."""
    return Path(os.environ.get("CAPSTORE_SHARED", REPO.parent / "shared"))


def shared_file(relative: str) -> Path:
    """A shared data file; exits with a one-line message naming it when it is absent."""
    path = shared_dir() / relative
    if not path.exists():
        sys.exit(f"shared data {relative} not found under {shared_dir()} (set CAPSTORE_SHARED)")
    return path


def machine() -> str:
    """One line: CPU model and count, Python, torch."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    return f"{cpu}, {os.cpu_count()} CPUs, Python {platform.python_version()}, torch {torch.__version__}"


def tiny_models(models_dir: str | Path):  # -> TinyModels
    """The tiny offline models (built once into ``models_dir``, reused afterwards)."""
    from capstore.backends.tiny import build_tiny_models

    return build_tiny_models(models_dir)


def drawn_images(n: int, seed: int = 1) -> list[bytes]:
    """``n`` PNGs drawn with the demo's code (shapes over a background), all different."""
    from capstore.datasets.demo import COLOURS, SCENES, SHAPES, Scene, draw_scene

    rng = random.Random(seed)
    out = []
    for i in range(n):
        scene = Scene(shape=rng.choice(SHAPES), colour=rng.choice(list(COLOURS)), count=1 + rng.randrange(3),
                      scene=rng.choice(list(SCENES)))
        out.append(draw_scene(scene, seed * 100_000 + i))
    return out


def coco_variants(n: int, folder: Path | None = None) -> list[bytes]:
    """``n`` distinct COCO-sized JPEGs: the shared COCO images, re-encoded at other qualities when
    more are needed (distinct bytes, so distinct shas, with the decode cost of a real photo)."""
    from PIL import Image

    folder = folder or shared_dir() / COCO_IMAGES
    files = sorted(folder.glob("*.jpg")) if folder.is_dir() else []
    if not files:
        return []
    out: list[bytes] = []
    quality = 95
    while len(out) < n:
        for f in files:
            if len(out) == n:
                break
            if quality == 95:
                out.append(f.read_bytes())
                continue
            buf = io.BytesIO()
            Image.open(f).convert("RGB").save(buf, format="JPEG", quality=quality)
            out.append(buf.getvalue())
        quality -= 3
    return out


def add_image_dataset(store, name: str, images: list[bytes]) -> None:  # type: ignore[no-untyped-def]
    """Import ``images`` as dataset ``name``/test (one item each, no references)."""
    from capstore.datasets.importer import ItemSpec, write_split

    specs = [ItemSpec(f"{name}-{i:04d}", f"{name}-{i:04d}", data=data) for i, data in enumerate(images)]
    write_split(store, name, "test", f"benchmark images ({len(images)})", specs)


def usage_by_stage(store, run_id: int | None = None, since_id: int = 0) -> dict[str, dict[str, float]]:  # type: ignore[no-untyped-def]
    """Sums of the usage events per stage (of one run, or after event ``since_id``)."""
    from sqlalchemy import func, select

    from capstore.store.schema import UsageEvent

    cols = (UsageEvent.device_seconds, UsageEvent.wall_seconds, UsageEvent.calls, UsageEvent.cached,
            UsageEvent.items, UsageEvent.images, UsageEvent.tokens_in, UsageEvent.tokens_out)
    query = select(UsageEvent.stage, func.count(), *[func.coalesce(func.sum(c), 0) for c in cols]).group_by(UsageEvent.stage)
    query = query.where(UsageEvent.run_id == run_id) if run_id is not None else query.where(UsageEvent.id > since_id)
    with store.read() as s:
        rows = s.execute(query).all()
    names = ("events", "device_seconds", "wall_seconds", "calls", "cached", "items", "images", "tokens_in", "tokens_out")
    return {r[0]: {k: float(v) for k, v in zip(names, r[1:])} for r in rows}


def last_usage_id(store) -> int:  # type: ignore[no-untyped-def]
    from sqlalchemy import func, select

    from capstore.store.schema import UsageEvent

    with store.read() as s:
        return int(s.scalar(select(func.coalesce(func.max(UsageEvent.id), 0))))


@contextmanager
def stopwatch() -> Iterator[dict[str, float]]:
    """``with stopwatch() as t: ...`` then ``t["s"]`` holds the wall seconds."""
    t: dict[str, float] = {}
    start = time.perf_counter()
    try:
        yield t
    finally:
        t["s"] = time.perf_counter() - start


def pg_reachable(url: str = PG_DEFAULT) -> bool:
    import sqlalchemy

    try:
        engine = sqlalchemy.create_engine(url)
        with engine.connect():
            pass
        engine.dispose()
        return True
    except Exception:
        return False


@contextmanager
def pg_schema(url: str = PG_DEFAULT) -> Iterator[str]:
    """A URL whose search_path is a new, empty schema, dropped afterwards."""
    import uuid

    import sqlalchemy

    schema = f"bench_{uuid.uuid4().hex[:10]}"
    engine = sqlalchemy.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in url else "?"
    try:
        yield f"{url}{sep}options=-csearch_path%3D{schema}"
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        engine.dispose()


def write_json(path: str | None, data: dict[str, Any]) -> None:
    if path:
        Path(path).write_text(json.dumps(data, indent=2, default=str))
        print(f"numbers written to {path}")
