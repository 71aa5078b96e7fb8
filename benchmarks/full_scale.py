"""A full-size rehearsal: the real engine on COCO-5K MILS's shape, with instant fake backends.

Usage::

    .venv/bin/python benchmarks/full_scale.py --small                         # 40 items x 10 x 50, SQLite + PG
    .venv/bin/python benchmarks/full_scale.py --out /tmp/full --json full.json # 5,000 items x 10 x 50
    .venv/bin/python benchmarks/full_scale.py --dialects sqlite --workers 1 --keep-stores --no-eval --no-queries
    .venv/bin/python benchmarks/full_scale.py --dialects postgresql --workers 1 --batch-images 128 --no-eval --no-queries
    .venv/bin/python benchmarks/full_scale.py --analyze sqlite:////tmp/capstore-full-scale/fullscale_sqlite_1w/store.db

For each database (SQLite file, PostgreSQL schema) and worker count (1, 2), a fresh store gets a
dataset of ``--items`` items (the Karpathy test split's first images' references from the shared
data, each item a distinct 16x16 PNG), the MILS pool and prompt of the shared data, and one MILS run
(``--iterations`` counting iteration 0, ``--keep 50 --requested 50``, ``--batch-images`` items a
batch: the engine's default 16 unless given) worked by the real engine: claims, leases and
heartbeats, batch commits of steps, the embedding (pool), score (generated
candidates) and generation caches, usage events. The backends are instant stand-ins registered for
this process (``bench:`` scorer and generator): the scorer's embeddings are made from the content's
sha (``--dim`` floats, 1152 as SigLIP SO400M, MILS's scorer, so the pool's cached embeddings have
their real size); the generator answers each prompt with ``--requested`` numbered variations of the
kept texts. Two workers are two forked
processes, each with its own connections, as ``capstore worker`` would be.

Measured per configuration:

- **engine overhead**: the run's wall time minus the time spent inside the fake backends' own
  arithmetic (what a real model would replace), per step (an item's iteration) and for the whole
  run, against the issue's goal (< 5% of the roofline GPU time of COCO-5K MILS, ~1 GPU-hour: 3 min);
  with where it goes (claims, item loading, step commits, cache reads and writes, usage events);
- **store size**: bytes in all and per table (SQLite ``dbstat``, PostgreSQL ``pg_total_relation_size``);
Eval and queries read the same run whatever wrote it: they are measured once per database, on the
configuration with the fewest workers (or, with ``--analyze URL``, in a process of their own on a
store kept by ``--keep-stores``). Peak memory (max RSS) is recorded per phase.

- **eval**: ``capstore eval`` of the run's captions (BLEU, METEOR, ROUGE-L, CIDEr-D; no CLIPScore),
  then ``eval --candidates`` (PTB tokenization of every new candidate text included), then
  ``eval --candidates`` again after tokenization (its candidate values dropped first);
- **queries**: the analysis mirror's first build, then every shipped ``sql/`` query and every
  view's typical filter (``analysis_queries.py``) on the warm mirror, median of ``--repeat``.

Numbers: ``benchmarks/README.md`` (issue 15).
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing as mp
import os
import queue
import random
import shutil
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_common as bc  # noqa: E402
from analysis_queries import all_queries, run_queries  # noqa: E402

from capstore.backends import fake as fake_mod  # noqa: E402
from capstore.backends import registry  # noqa: E402
from capstore.backends.base import CallContext, Generation, ImageRef  # noqa: E402
from capstore.backends.caching import get_embeddings, put_embeddings  # noqa: E402
from capstore.backends.models import register_model  # noqa: E402
from capstore.backends.registry import BackendSpec, register  # noqa: E402
from capstore.backends.usage import record_usage  # noqa: E402
from capstore.errors import InputError  # noqa: E402
from capstore.runs import RunConfig  # noqa: E402
from capstore.runs.validate import check_int  # noqa: E402
from capstore.store import Store, open_store  # noqa: E402
from capstore.store.content import sha256_text  # noqa: E402

KARPATHY = "data/coco-karpathy-test/captions_karpathy_test.json"
ROOFLINE_GPU_S = 3600.0  # COCO-5K MILS on one H100, roofline (issue 15): the overhead goal is 5% of it
VOCAB = ("a", "the", "small", "large", "red", "white", "black", "wooden", "old", "young", "two", "three", "near",
         "on", "in", "with", "beside", "under", "sitting", "standing", "walking", "holding", "man", "woman",
         "dog", "cat", "table", "street", "field", "kitchen", "bus", "train", "plate", "picture", "bright", "dark")


# -- timing ------------------------------------------------------------------------------------


class Clock:
    """Seconds spent per named part in this process (backends' arithmetic and engine parts)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self._lock = threading.Lock()  # a worker's backend writes run on another thread (write_alongside)

    @contextmanager
    def part(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            with self._lock:
                self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start
                self.calls[name] = self.calls.get(name, 0) + 1

    def wrap(self, owner: Any, attr: str, name: str) -> None:
        """Time every call of ``owner.attr`` as ``name`` (patched where the engine looks it up)."""
        inner = getattr(owner, attr)

        def timed(*args: Any, **kwargs: Any) -> Any:
            with self.part(name):
                return inner(*args, **kwargs)

        setattr(owner, attr, timed)


CLOCK = Clock()


def instrument() -> None:
    """Time the engine's store work where the engine calls it."""
    from capstore.backends import score_cache
    from capstore.runs import engine, mils_worker, steps

    for owner, attr, name in ((engine, "claim", "claim"), (engine, "release", "release"),
                              (engine, "_load_items", "load items"), (mils_worker, "commit_steps", "commit steps"),
                              (mils_worker.MilsWorker, "_date_captions", "caption's first iteration"),
                              (mils_worker, "load_pool", "load pool"),
                              (fake_mod, "get_generations", "generation cache read"),
                              (fake_mod, "put_generations", "generation cache write"),
                              (fake_mod, "record_usage", "usage events"),
                              (score_cache, "get_media_scores", "score cache read"),
                              (score_cache, "put_scores", "score cache write"),
                              (score_cache, "record_usage", "usage events"),
                              # parts of "commit steps" (inside it, not beside it)
                              (steps, "put_texts", "commit steps: texts"),
                              (steps, "insert_tables", "commit steps: candidates, states, captions"),
                              (steps, "_advance", "commit steps: work items")):
        CLOCK.wrap(owner, attr, name)


# -- instant backends --------------------------------------------------------------------------


class BenchScorer:
    """Embeddings made from the content's sha: the real scorer's cache and usage path, no model."""

    kind = "scorer"

    def __init__(self, spec: BackendSpec, store: Store, dim: int = 1152, **_: Any) -> None:
        self.store, self.dim = store, dim
        self.model_id, self.fingerprint = register_model(store, kind="scorer", backend="bench", name=str(spec),
                                                         weights=f"bench:{spec.model}:{dim}", settings={"dim": dim})

    def encode_texts(self, texts: Sequence[str], ctx: CallContext = CallContext(), cache: bool = True) -> np.ndarray:
        return self._cached("text", [sha256_text(t) for t in texts], ctx, cache)

    def encode_images(self, images: Sequence[ImageRef], ctx: CallContext = CallContext()) -> np.ndarray:
        return self._cached("image", [im.sha256 for im in images], ctx)

    def score(self, image: ImageRef, texts: Sequence[str], ctx: CallContext = CallContext()) -> np.ndarray:
        return self.encode_texts(texts, ctx) @ self.encode_images([image], ctx)[0]

    def _cached(self, kind: str, shas: list[str], ctx: CallContext, cache: bool = True) -> np.ndarray:
        if not shas:
            return np.zeros((0, self.dim), dtype=np.float32)
        start = time.perf_counter()
        with CLOCK.part("embedding cache read"):
            found = get_embeddings(self.store, self.model_id, kind, shas) if cache else {}
        misses = [s for s in dict.fromkeys(shas) if s not in found]
        if misses:
            with CLOCK.part("backends (fake arithmetic)"):
                vectors = self._vectors(misses)
            if cache:
                with CLOCK.part("embedding cache write"):
                    put_embeddings(self.store, self.model_id, kind, misses, vectors)
            found.update(zip(misses, vectors))
        with CLOCK.part("usage events"):
            record_usage(self.store, run_id=ctx.run_id, stage=ctx.stage or f"encode_{kind}", model_id=self.model_id,
                         device_type="cpu", device_name="bench", device_seconds=0.0,
                         wall_seconds=time.perf_counter() - start, images=len(misses) if kind == "image" else 0,
                         items=len(set(shas)), calls=1 if misses else 0, cached=len(set(shas)) - len(misses),
                         worker=ctx.worker)
        with CLOCK.part("backends (fake arithmetic)"):
            return np.stack([found[s] for s in shas])

    def _vectors(self, shas: list[str]) -> np.ndarray:
        raw = np.frombuffer(b"".join(bytes.fromhex(s) for s in shas), dtype=np.uint8).reshape(len(shas), 32)
        base = raw.astype(np.float32) - 127.5
        vecs = np.tile(base, (1, -(-self.dim // 32)))[:, : self.dim]
        vecs *= np.linspace(1.0, 0.2, self.dim, dtype=np.float32)  # not periodic: scores vary
        return (vecs / np.linalg.norm(vecs, axis=1, keepdims=True)).astype(np.float32)


class BenchGenerator(fake_mod.FakeGenerator):
    """``requested`` numbered variations of the prompt's kept texts per answer (a word replaced,
    dropped or added), through the fake generator's cache and usage path."""

    def __init__(self, spec: BackendSpec, store: Store, requested: int = 50, **params: Any) -> None:
        super().__init__(spec, store, requested=requested, **params)
        self.requested = requested

    def _answer(self, prompt: str, seed: int) -> Generation:
        with CLOCK.part("backends (fake arithmetic)"):
            rng = random.Random(seed)
            bases = [line.split(": ", 1)[1] for line in prompt.splitlines()
                     if ": " in line and line[:1].isdigit()] or ["a photo of something"]
            lines = []
            for n in range(self.requested):
                words = rng.choice(bases).split()
                pos = rng.randrange(len(words))
                op = rng.random()
                if op < 0.5:
                    words[pos] = rng.choice(VOCAB)
                elif op < 0.75 and len(words) > 4:
                    del words[pos]
                else:
                    words.insert(pos, rng.choice(VOCAB))
                lines.append(f"{n + 1}. {' '.join(words)}")
            return Generation(text="\n".join(lines), tokens_in=len(prompt.split()), tokens_out=12 * self.requested)


def register_backends(dim: int, requested: int) -> None:
    """``bench:`` scorer and generator, known to the registry of this process (and of forked workers)."""
    registry._MODULES[("scorer", "bench")] = __name__
    registry._MODULES[("generator", "bench")] = __name__
    register("scorer", "bench")(lambda spec, store, **options: BenchScorer(spec, store, dim=dim))
    register("generator", "bench")(lambda spec, store, **options: BenchGenerator(spec, store, requested=requested))


# -- the store and the run ---------------------------------------------------------------------


def png(k: int) -> bytes:
    """A distinct 16x16 PNG for item ``k`` (decoded by the engine as a real image is)."""
    from PIL import Image

    rng = np.random.default_rng(k)
    img = Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def item_specs(n: int) -> list[Any]:
    from capstore.datasets.importer import ItemSpec

    data = json.loads(bc.shared_file(KARPATHY).read_text())
    refs: dict[int, list[tuple[str, str | None]]] = {}
    for ann in data["annotations"]:
        refs.setdefault(ann["image_id"], []).append((ann["caption"], str(ann["id"])))
    images = sorted(data["images"], key=lambda im: im["id"])[:n]
    return [ItemSpec(external_id=str(im["id"]), file_name=f"{im['id']}.png", data=png(k),
                     references=refs.get(im["id"], [])) for k, im in enumerate(images)]


def fresh_store(dialect: str, name: str, out: Path) -> str:
    """An empty store's URL: a new SQLite file under ``out``, or a new PostgreSQL schema ``name``."""
    if dialect == "sqlite":
        folder = out / name
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        return f"sqlite:///{folder / 'store.db'}"
    from sqlalchemy import create_engine, text

    engine = create_engine(bc.PG_DEFAULT)
    with engine.begin() as conn:
        conn.execute(text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
        conn.execute(text(f'CREATE SCHEMA "{name}"'))
    engine.dispose()
    return f"{bc.PG_DEFAULT}?options=-csearch_path%3D{name}"


def drop_store(dialect: str, name: str, out: Path) -> None:
    if dialect == "sqlite":
        shutil.rmtree(out / name, ignore_errors=True)
        return
    from sqlalchemy import create_engine, text

    engine = create_engine(bc.PG_DEFAULT)
    with engine.begin() as conn:
        conn.execute(text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
    engine.dispose()


def create(url: str, items: int, iterations: int, keep: int, requested: int, batch_images: int) -> int:
    from capstore.datasets.importer import write_split
    from capstore.runs import create_run

    store = open_store(url)
    try:
        write_split(store, "coco-karpathy", "test", "full_scale", item_specs(items))
        cfg = RunConfig(method="mils", dataset="coco-karpathy", split="test", scorer="bench:siglip",
                        generator="bench:mils", iterations=iterations - 1, keep=keep, requested=requested,
                        device="cpu", label="rehearsal", batch_images=batch_images)
        return create_run(store, cfg, pool_file=str(bc.shared_file(bc.POOL)), prompt_file=str(bc.shared_file(bc.PROMPT)))
    finally:
        store.dispose()


def _work(url: str, run_id: int, worker: str, results: Any) -> None:
    """One worker process (or the only one): the engine's ``work`` on its own connections."""
    from capstore.runs.engine import work

    instrument()
    store = open_store(url)
    start = time.perf_counter()
    summary = work(store, run_id, worker=worker, progress=False)
    wall = time.perf_counter() - start
    store.dispose()
    results.put({"worker": worker, "wall_s": wall, "steps": summary.steps, "status": summary.status,
                 "parts": CLOCK.seconds, "calls": CLOCK.calls})


def run_workers(url: str, run_id: int, workers: int) -> dict[str, Any]:
    ctx = mp.get_context("fork")  # the workers inherit the registered bench backends
    results = ctx.Queue()
    procs = [ctx.Process(target=_work, args=(url, run_id, f"bench:{k}", results)) for k in range(workers)]
    start = time.perf_counter()
    for p in procs:
        p.start()
    got = []
    while len(got) < len(procs):  # a worker that dies before it reports fails the rehearsal, not hangs it
        try:
            got.append(results.get(timeout=1.0))
        except queue.Empty:
            if sum(p.exitcode is not None for p in procs) > len(got):
                try:  # one that reported just before it exited: its result is in the pipe
                    got.append(results.get(timeout=5.0))
                except queue.Empty:
                    raise SystemExit(f"a worker died: exit codes {[p.exitcode for p in procs]}") from None
    for p in procs:
        p.join()
    wall = time.perf_counter() - start
    if any(p.exitcode for p in procs):
        raise SystemExit(f"a worker failed: exit codes {[p.exitcode for p in procs]}")
    parts: dict[str, float] = {}
    for g in got:
        for k, v in g["parts"].items():
            parts[k] = parts.get(k, 0.0) + v
    steps = sum(g["steps"] for g in got)
    fake = parts.get("backends (fake arithmetic)", 0.0)
    busy = sum(g["wall_s"] for g in got)  # worker-seconds
    overhead = busy - fake
    return {"workers": workers, "wall_s": wall, "worker_seconds": busy, "steps": steps,
            "fake_backend_s": fake, "engine_overhead_worker_s": overhead,
            "engine_overhead_ms_per_step": 1000 * overhead / max(steps, 1),
            "overhead_vs_roofline": overhead / ROOFLINE_GPU_S, "parts_s": dict(sorted(parts.items(), key=lambda kv: -kv[1])),
            "per_worker": [{k: g[k] for k in ("worker", "wall_s", "steps", "status")} for g in got]}


# -- what it left -------------------------------------------------------------------------------


def store_size(store: Store) -> dict[str, Any]:
    from sqlalchemy import text

    if store.dialect == "sqlite":
        import sqlite3

        path = store.url.removeprefix("sqlite:///")
        con = sqlite3.connect(path)
        try:
            con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            owner = dict(con.execute("SELECT name, tbl_name FROM sqlite_master").fetchall())
            tables: dict[str, int] = {}
            for name, size in con.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name"):
                tables[owner.get(name, name)] = tables.get(owner.get(name, name), 0) + int(size)
        finally:
            con.close()
        total = os.path.getsize(path)
    else:
        with store.engine.connect() as conn:
            rows = conn.execute(text("SELECT c.relname, pg_total_relation_size(c.oid) FROM pg_class c "
                                     "WHERE c.relkind = 'r' AND c.relnamespace = current_schema()::regnamespace")).all()
        tables = {r[0]: int(r[1]) for r in rows}
        total = sum(tables.values())
    return {"bytes": total, "tables": dict(sorted(tables.items(), key=lambda kv: -kv[1]))}


def counts(store: Store, run_id: int) -> dict[str, int]:
    from sqlalchemy import func, select

    from capstore.store.schema import Candidate, EmbeddingCache, GenerationCache, ScoreSet, Text

    with store.read() as s:
        return {"candidates": s.scalar(select(func.count()).select_from(Candidate).where(Candidate.run_id == run_id)),
                "texts": s.scalar(select(func.count()).select_from(Text)),
                "embeddings": s.scalar(select(func.count()).select_from(EmbeddingCache)),
                "scores": s.scalar(select(func.coalesce(func.sum(ScoreSet.size), 0))),
                "generations": s.scalar(select(func.count()).select_from(GenerationCache))}


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    got = fn()
    return time.perf_counter() - start, got


def evaluate(store: Store, run_id: int) -> dict[str, Any]:
    """eval, eval --candidates (tokenizing the candidates), and eval --candidates after tokenization."""
    from capstore.metrics import evaluate_run
    from capstore.metrics.names import CANDIDATE_METRICS
    from capstore.metrics.store_values import set_corpus_details, stored_corpus

    out: dict[str, Any] = {}
    out["eval_s"], result = timed(lambda: evaluate_run(store, run_id, clip_scorer=None, progress=False))
    out["corpus"] = result.corpus
    print(f"  eval {out['eval_s']:.1f} s (peak RSS {peak_rss_mb()})", flush=True)
    out["eval_candidates_s"], result = timed(lambda: evaluate_run(store, run_id, candidates=True, clip_scorer=None,
                                                                  progress=False))
    out["candidates"] = result.candidates
    print(f"  eval --candidates {out['eval_candidates_s']:.1f} s (peak RSS {peak_rss_mb()})", flush=True)
    # Forget that the candidates were evaluated (the tokens stay): the next eval --candidates computes them again.
    for row in stored_corpus(store, run_id, CANDIDATE_METRICS):
        set_corpus_details(store, run_id, row.metric, row.implementation,
                           {k: v for k, v in row.details.items() if k != "candidates"})
    out["eval_candidates_tokenized_s"], result = timed(lambda: evaluate_run(store, run_id, candidates=True,
                                                                            clip_scorer=None, progress=False))
    out["computed_again"] = result.computed
    return out


def queries(store: Store, run_id: int, repeat: int) -> dict[str, Any]:
    from capstore.analysis.mirror import mirror_path

    path = mirror_path(store)
    out: dict[str, Any] = {}
    if path is not None:
        for p in (path, path.with_name(path.name + ".wal")):
            p.unlink(missing_ok=True)
    from capstore.analysis.duckdb_store import open_analysis

    out["mirror_build_s"], (con, info) = timed(lambda: open_analysis(store, passthrough=False))
    con.close()
    out["mirror_bytes"] = path.stat().st_size if path is not None and path.exists() else None
    out["noop_open_s"], (con, info) = timed(lambda: open_analysis(store, passthrough=False))
    con.close()
    out["queries"] = run_queries(store, all_queries(store, run_id), repeat, None)
    return out


# -- one configuration ---------------------------------------------------------------------------


def peak_rss_mb() -> dict[str, float]:
    import resource

    return {"self": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "children": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}


def analyze(url: str, args: argparse.Namespace, run_id: int = 1) -> dict[str, Any]:
    """Counts, size, eval and queries of an existing store's run."""
    out: dict[str, Any] = {"url": url}
    store = open_store(url)
    try:
        out["counts"] = counts(store, run_id)
        out["size_after_run"] = store_size(store)
        print(f"  store: {out['size_after_run']['bytes'] / 1e9:.2f} GB, {out['counts']}", flush=True)
        if not args.no_eval:
            out["eval"] = evaluate(store, run_id)
            print(f"  eval {out['eval']['eval_s']:.1f} s, eval --candidates {out['eval']['eval_candidates_s']:.1f} s, "
                  f"after tokenization {out['eval']['eval_candidates_tokenized_s']:.1f} s", flush=True)
            out["size_after_eval"] = store_size(store)
            out["peak_rss_mb_after_eval"] = peak_rss_mb()
        if not args.no_queries:
            out["analysis"] = queries(store, run_id, args.repeat)
            slow = max(out["analysis"]["queries"].items(), key=lambda kv: kv[1]["median_s"])
            print(f"  mirror built in {out['analysis']['mirror_build_s']:.1f} s; slowest query "
                  f"{slow[1]['median_s']:.3f} s ({slow[0]})", flush=True)
        out["peak_rss_mb"] = peak_rss_mb()
    finally:
        store.dispose()
    return out


def rehearse(dialect: str, workers: int, args: argparse.Namespace) -> dict[str, Any]:
    name = f"fullscale_{dialect}_{workers}w" if not args.small else f"fullscale_small_{dialect}_{workers}w"
    url = fresh_store(dialect, name, Path(args.out))
    out: dict[str, Any] = {"dialect": dialect, "workers": workers}
    try:
        out["setup_s"], run_id = timed(lambda: create(url, args.items, args.iterations, args.keep, args.requested,
                                                        args.batch_images))
        print(f"[{dialect}, {workers} worker(s)] run {run_id} created in {out['setup_s']:.1f} s", flush=True)
        out["run"] = run_workers(url, run_id, workers)
        r = out["run"]
        print(f"  run: {r['wall_s']:.1f} s wall, {r['steps']} steps, engine overhead "
              f"{r['engine_overhead_ms_per_step']:.2f} ms/step ({r['engine_overhead_worker_s']:.1f} worker-s, "
              f"{100 * r['overhead_vs_roofline']:.1f}% of 1 GPU-hour)", flush=True)
        first = workers == min(int(w) for w in args.workers.split(","))  # the same run: analyzed once per database
        no_eval, no_queries = args.no_eval, args.no_queries
        args.no_eval, args.no_queries = no_eval or not first, no_queries or not first
        try:
            out.update({k: v for k, v in analyze(url, args, run_id).items() if k != "url"})
        finally:
            args.no_eval, args.no_queries = no_eval, no_queries
    finally:
        if not args.keep_stores:
            drop_store(dialect, name, Path(args.out))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", action="store_true", help="40 items (a quick check of the whole path)")
    parser.add_argument("--items", type=int, default=5000)
    parser.add_argument("--iterations", type=int, default=10, help="counting iteration 0 (the pool's top)")
    parser.add_argument("--keep", type=int, default=50)
    parser.add_argument("--requested", type=int, default=50)
    parser.add_argument("--dim", type=int, default=1152, help="embedding size (SigLIP SO400M: 1152)")
    parser.add_argument("--batch-images", type=int, default=RunConfig.batch_images,
                        help="items per batch (the engine's default: %(default)s; a GPU's generator wants more)")
    parser.add_argument("--dialects", default="sqlite,postgresql")
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-eval", action="store_true")
    parser.add_argument("--no-queries", action="store_true")
    parser.add_argument("--keep-stores", action="store_true", help="leave the stores (SQLite files, PG schemas)")
    parser.add_argument("--out", default="/tmp/capstore-full-scale", help="folder of the SQLite stores")
    parser.add_argument("--analyze", metavar="URL", help="only eval and queries, on this kept store's run 1")
    parser.add_argument("--json")
    args = parser.parse_args()
    try:  # the engine's own bounds, refused in one line before any store is made
        check_int("batch_images", args.batch_images)
    except InputError as exc:
        parser.error(str(exc))
    if args.small:
        args.items = 40
    register_backends(args.dim, args.requested)
    if args.analyze:
        out = {"machine": bc.machine(), "argv": sys.argv[1:], **analyze(args.analyze, args)}
        if args.json:
            Path(args.json).write_text(json.dumps(out, indent=2, default=str))
        return
    results: dict[str, Any] = {"machine": bc.machine(), "argv": sys.argv[1:],
                               "spec": {k: getattr(args, k) for k in ("items", "iterations", "keep", "requested", "dim",
                                                                         "batch_images")},
                               "configurations": []}
    for dialect in args.dialects.split(","):
        for workers in (int(w) for w in args.workers.split(",")):
            results["configurations"].append(rehearse(dialect, workers, args))
            if args.json:
                Path(args.json).write_text(json.dumps(results, indent=2, default=str))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
