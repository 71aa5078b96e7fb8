"""A full-size synthetic store: what a MILS run on COCO's 5,000 test images writes, and two baselines.

Usage::

    .venv/bin/python benchmarks/big_store.py --db /tmp/big/store.db                 # SQLite, 2.5M candidates
    .venv/bin/python benchmarks/big_store.py --db /tmp/small.db --items 200         # 100K candidates
    .venv/bin/python benchmarks/big_store.py --db 'postgresql+psycopg://postgres@127.0.0.1:5432/test?options=-csearch_path%3Dbig'

Everything goes through capstore's own schema and writers, as a run would write it: the dataset
through ``capstore.datasets.importer.write_split`` (the shared Karpathy test annotations when they are
there, else synthetic references), runs through ``create_run``-shaped rows, and the bulk rows
(texts, candidates, iteration states, captions, usage, metric values) through
``capstore.store.bulk.insert_rows`` inside ``store.write(bulk=True)``, one transaction per batch of
items, in the engine's order (a batch of 16 images through every iteration, then the next batch).

What it holds, with the defaults (``--items 5000 --iterations 10 --candidates 50``):

- a MILS run: 5,000 items × 10 iterations (0 = the pool's top, then 9 generated) × 50 new candidates
  = 2.5M candidates over ~0.9M distinct texts (each item draws its candidates from ~180 variants of
  its references, so texts repeat across iterations as MILS's do), one iteration state per
  (item, iteration) with its kept set (the 50 best so far), a caption per item, usage events per
  batch and stage;
- two baseline runs (``blip2``, ``llava``): one caption per item;
- with ``--metrics synthetic`` (the default) metric rows of implementation ``bench-synthetic-1``:
  corpus and per-item values of seven metrics for each run, and BLEU-4 and CIDEr of every MILS
  candidate (5M values: one ``candidate_evals`` row and 2.5M ``candidate_eval_values`` rows) — the
  shape ``capstore eval --candidates`` writes, with made-up values; ``--metrics none`` leaves them
  out (``capstore eval`` then computes real ones).

``--sizes DIR`` (SQLite) then measures what the store takes against Parquet: bytes per table
(``dbstat``), ``capstore export --parquet`` of the MILS run into DIR, and the candidate values alone
as zstd Parquet (candidate id, metric, value) — the goal of issue 15: candidate metrics in SQLite
under 2x their Parquet export.

Deterministic for a given ``--seed``. The build is one function, ``build_big_store(store, spec)``,
for other benchmarks (``full_scale.py``) to reuse.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Iterator, Sequence

from sqlalchemy import func, select

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from capstore.datasets.importer import ItemSpec, write_split  # noqa: E402
from capstore.runs.config import RunConfig  # noqa: E402
from capstore.runs.steps import CANDIDATE_COLUMNS, CAPTION_COLUMNS, STATE_COLUMNS  # noqa: E402
from capstore.store import Store, open_store  # noqa: E402
from capstore.store.bulk import insert_rows  # noqa: E402
from capstore.store.content import sha256_text  # noqa: E402
from capstore.store.schema import (Candidate, CandidateEval, CandidateEvalValue, Caption, Dataset, Item,  # noqa: E402
                                   IterationState, MetricValue, Run, Split, Text, UsageEvent, WorkItem, utcnow)

KARPATHY = "data/coco-karpathy-test/captions_karpathy_test.json"
SYNTHETIC_IMPL = "bench-synthetic-1"
ITEM_METRICS = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr")
CANDIDATE_METRICS = ("Bleu_4", "CIDEr")
VOCAB = ("a", "the", "man", "woman", "dog", "cat", "red", "blue", "small", "large", "sitting", "standing", "on",
         "in", "next", "to", "with", "table", "street", "field", "group", "of", "people", "white", "black", "two",
         "plate", "food", "train", "bus", "picture", "photo", "near", "water", "grass", "building", "holding")
WORK_COLUMNS = ("run_id", "item_id", "status", "lease_owner", "lease_expires_at", "attempts", "iterations_done",
                "stopped_early_at", "updated_at")
USAGE_COLUMNS = ("run_id", "stage", "model_id", "device_type", "device_name", "device_seconds", "wall_seconds",
                 "tokens_in", "tokens_out", "images", "items", "calls", "cached", "worker", "created_at")
METRIC_COLUMNS = ("run_id", "metric", "scope", "subject", "item_id", "candidate_id", "value", "implementation",
                  "details", "created_at")


@dataclass
class BigStoreSpec:
    items: int = 5000
    iterations: int = 10  # iteration 0 (the pool's top) included
    candidates: int = 50  # new candidates per (item, iteration)
    variants: int = 180  # distinct candidate texts per item (must be >= candidates)
    keep: int = 50
    batch: int = 16  # items per engine batch (and per bulk transaction group)
    baselines: tuple[str, ...] = ("blip2", "llava")
    metrics: str = "synthetic"  # "synthetic" or "none"
    seed: int = 0
    dataset: str = "coco-karpathy"
    references: str | None = None  # a COCO captions file; default: the shared Karpathy test file if present


@dataclass
class BigStoreInfo:
    dialect: str
    runs: dict[str, int] = field(default_factory=dict)  # name -> run id
    rows: dict[str, int] = field(default_factory=dict)  # table -> rows written
    seconds: dict[str, float] = field(default_factory=dict)
    references_source: str = ""


def shared_dir() -> Path:
    return Path(os.environ.get("CAPSTORE_SHARED", REPO.parent / "shared"))


def _item_specs(spec: BigStoreSpec) -> tuple[list[ItemSpec], str]:
    """The items with their references: the Karpathy test split's first ``spec.items`` images, or synthetic ones."""
    path = Path(spec.references) if spec.references else shared_dir() / KARPATHY
    if path.exists():
        data = json.loads(path.read_text())
        refs: dict[int, list[tuple[str, str | None]]] = {}
        for ann in data["annotations"]:
            refs.setdefault(ann["image_id"], []).append((ann["caption"], str(ann["id"])))
        images = sorted(data["images"], key=lambda im: im["id"])[: spec.items]
        return ([ItemSpec(external_id=str(im["id"]), file_name=im["file_name"], references=refs.get(im["id"], []))
                 for im in images], str(path))
    rng = random.Random(spec.seed)
    specs = []
    for k in range(spec.items):
        sentences = [" ".join(rng.choice(VOCAB) for _ in range(rng.randint(7, 13))).capitalize() + "."
                     for _ in range(5)]
        specs.append(ItemSpec(external_id=str(100000 + k), references=[(s, None) for s in sentences]))
    return specs, "synthetic"


def _variants(refs: Sequence[str], n: int, rng: random.Random) -> list[str]:
    """``n`` distinct captions made from an item's references by dropping, replacing, inserting and swapping words."""
    out: dict[str, None] = {}
    words_of = [r.rstrip(" .").split() or ["a", "photo"] for r in refs]
    while len(out) < n:
        words = list(rng.choice(words_of))
        for _ in range(rng.randint(1, 3)):
            op = rng.random()
            pos = rng.randrange(len(words))
            if op < 0.3 and len(words) > 3:
                del words[pos]
            elif op < 0.6:
                words[pos] = rng.choice(VOCAB)
            elif op < 0.8:
                words.insert(pos, rng.choice(VOCAB))
            elif pos + 1 < len(words):
                words[pos], words[pos + 1] = words[pos + 1], words[pos]
        text = " ".join(words)
        text = text[:1].upper() + text[1:] + ("." if rng.random() < 0.7 else "")
        out.setdefault(text, None)
    return list(out)


def _config(spec: BigStoreSpec, method: str) -> RunConfig:
    if method == "mils":
        return RunConfig(method="mils", dataset=spec.dataset, split="test", seed=spec.seed,
                         scorer="open_clip:ViT-SO400M-14-SigLIP@webli",
                         generator="hf:meta-llama/Meta-Llama-3.1-8B-Instruct", pool_name="bench-pool",
                         iterations=spec.iterations - 1, keep=spec.keep, requested=spec.candidates)
    return RunConfig(method=method, dataset=spec.dataset, split="test", seed=spec.seed, label=f"{method} (bench)",
                     captioner={"blip2": "blip2:Salesforce/blip2-flan-t5-xl",
                                "llava": "llava:llava-hf/llava-1.5-7b-hf"}.get(method, f"{method}:bench"))


def _new_run(store: Store, spec: BigStoreSpec, method: str, split_id: int) -> int:
    cfg = _config(spec, method)
    now = utcnow()
    with store.write() as s:
        run = Run(method=method, label=cfg.label, config=cfg.to_json(), config_hash=cfg.hash(), split_id=split_id,
                  status="done", seed=spec.seed, capstore_version="bench", created_at=now,
                  started_at=now, finished_at=now + timedelta(hours=1 if method == "mils" else 0.1))
        s.add(run)
        s.flush()
        return run.id


def _batches(seq: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(seq), size):
        yield seq[start:start + size]


def _write_texts(s: Any, texts: dict[str, str], known: set[str]) -> int:
    """Insert the texts not stored yet (``known`` holds the shas already written)."""
    rows = sorted((sha, t) for sha, t in texts.items() if sha not in known)
    insert_rows(s, Text.__table__, ("sha256", "text"), rows)
    known.update(sha for sha, _ in rows)
    return len(rows)


def _write_mils(store: Store, spec: BigStoreSpec, run_id: int, items: list[tuple[int, list[str]]],
                info: BigStoreInfo, known: set[str]) -> None:
    """The MILS run's rows, one bulk transaction per ``spec.batch * 20`` items (batches in engine order)."""
    rng = random.Random(spec.seed + 1)
    group = spec.batch * 20
    for part in _batches(items, group):
        texts: dict[str, str] = {}
        cands: list[tuple[Any, ...]] = []
        states: list[tuple[Any, ...]] = []
        captions: list[tuple[Any, ...]] = []
        work: list[tuple[Any, ...]] = []
        usage: list[tuple[Any, ...]] = []
        now = utcnow()
        for batch in _batches(part, spec.batch):
            pools = {}
            for item_id, refs in batch:
                variants = _variants(refs, spec.variants, rng)
                shas = [sha256_text(t) for t in variants]
                texts.update(zip(shas, variants))
                pools[item_id] = shas
            kept: dict[int, list[tuple[str, float]]] = {item_id: [] for item_id, _ in batch}
            for it in range(spec.iterations):
                for item_id, _ in batch:
                    chosen = rng.sample(pools[item_id], spec.candidates)
                    scored = sorted(((sha, round(0.1 + 0.02 * it + 0.25 * rng.random(), 6)) for sha in chosen),
                                    key=lambda p: -p[1])
                    origin = "pool" if it == 0 else "generated"
                    cands.extend((run_id, item_id, it, sha, origin, sc, r) for r, (sha, sc) in enumerate(scored, 1))
                    merged = dict(kept[item_id])
                    for sha, sc in scored:
                        merged[sha] = max(sc, merged.get(sha, sc))
                    best = sorted(merged.items(), key=lambda p: -p[1])[: spec.keep]
                    kept[item_id] = best
                    states.append((run_id, item_id, it, best[0][0], best[0][1], sum(sc for _, sc in best) / len(best),
                                   len(scored), [[sha, sc] for sha, sc in best], now))
                usage.append((run_id, "generate" if it else "encode_image", None, "cuda", "NVIDIA H100 80GB HBM3",
                              2.5 * len(batch), 2.6 * len(batch), 900 * len(batch) if it else 0,
                              700 * len(batch) if it else 0, 0 if it else len(batch), len(batch), 1, 0, "bench:1", now))
                if it:
                    usage.append((run_id, "encode_text", None, "cuda", "NVIDIA H100 80GB HBM3", 0.05 * len(batch),
                                  0.06 * len(batch), 0, 0, 0, spec.candidates * len(batch), 1, 0, "bench:1", now))
            for item_id, _ in batch:
                best_sha, best_score = kept[item_id][0]
                captions.append((run_id, item_id, best_sha, best_score, spec.iterations - 1, now))
                work.append((run_id, item_id, "done", None, None, 1, spec.iterations - 1, None, now))
        with store.write(bulk=True) as s:
            info.rows["texts"] = info.rows.get("texts", 0) + _write_texts(s, texts, known)
            for table, columns, rows in ((WorkItem, WORK_COLUMNS, work), (Candidate, CANDIDATE_COLUMNS, cands),
                                         (IterationState, STATE_COLUMNS, states), (Caption, CAPTION_COLUMNS, captions),
                                         (UsageEvent, USAGE_COLUMNS, usage)):
                info.rows[table.__tablename__] = info.rows.get(table.__tablename__, 0) + insert_rows(
                    s, table.__table__, columns, rows)
        print(f"  mils: {info.rows['candidates']:,} candidates", end="\r", flush=True)
    print()


def _write_baseline(store: Store, spec: BigStoreSpec, run_id: int, items: list[tuple[int, list[str]]],
                    info: BigStoreInfo, known: set[str]) -> None:
    rng = random.Random(spec.seed + run_id)
    now = utcnow()
    texts, captions, work, usage = {}, [], [], []
    for item_id, refs in items:
        text = _variants(refs, 1, rng)[0]
        sha = sha256_text(text)
        texts[sha] = text
        captions.append((run_id, item_id, sha, None, None, now))
        work.append((run_id, item_id, "done", None, None, 1, 0, None, now))
    for batch in _batches(items, spec.batch):
        usage.append((run_id, "caption", None, "cuda", "NVIDIA A10G", 0.4 * len(batch), 0.45 * len(batch), 0,
                      12 * len(batch), len(batch), len(batch), 1, 0, "bench:1", now))
    with store.write(bulk=True) as s:
        info.rows["texts"] = info.rows.get("texts", 0) + _write_texts(s, texts, known)
        for table, columns, rows in ((WorkItem, WORK_COLUMNS, work), (Caption, CAPTION_COLUMNS, captions),
                                     (UsageEvent, USAGE_COLUMNS, usage)):
            info.rows[table.__tablename__] = info.rows.get(table.__tablename__, 0) + insert_rows(
                s, table.__table__, columns, rows)


def _write_synthetic_metrics(store: Store, spec: BigStoreSpec, runs: dict[str, int], info: BigStoreInfo) -> None:
    """Corpus and per-item values of each run, and candidate BLEU-4/CIDEr of the MILS run (made-up values)."""
    rng = random.Random(spec.seed + 7)
    now = utcnow()
    rows: list[tuple[Any, ...]] = []
    for run_id in runs.values():
        with store.read() as s:
            items = s.scalars(select(Caption.item_id).where(Caption.run_id == run_id).order_by(Caption.item_id)).all()
        for metric in ITEM_METRICS:
            values = [rng.random() for _ in items]
            rows.append((run_id, metric, "corpus", "corpus", None, None, sum(values) / len(values), SYNTHETIC_IMPL,
                         {"synthetic": True}, now))
            rows.extend((run_id, metric, "item", f"item:{i}", i, None, v, SYNTHETIC_IMPL, None, now)
                        for i, v in zip(items, values))
    with store.write(bulk=True) as s:
        info.rows["metric_values"] = insert_rows(s, MetricValue.__table__, METRIC_COLUMNS, rows)
    mils = runs["mils"]
    with store.write() as s:
        evaluation = CandidateEval(run_id=mils, bleu_4_implementation=SYNTHETIC_IMPL,
                                   cider_implementation=SYNTHETIC_IMPL, created_at=now)
        s.add(evaluation)
        s.flush()
        eval_id = evaluation.id
    info.rows["candidate_eval_values"] = 0
    last = 0
    while True:  # candidate values in chunks of 500K candidates, by candidate id
        with store.read() as s:
            cands = s.execute(select(Candidate.id, Candidate.text_sha).where(Candidate.run_id == mils, Candidate.id > last)
                              .order_by(Candidate.id).limit(500_000)).all()
        if not cands:
            break
        last = cands[-1][0]
        # Full 52-bit doubles (pycocoevalcap's BLEU is never exactly 0: it smooths by 1e-15), equal for
        # equal texts of an item as real ones are (texts repeat across iterations).
        rows = [(eval_id, cid, int(sha[:13], 16) / 16**13 * 0.6, int(sha[13:26], 16) / 16**13 * 1.5)
                for cid, sha in cands]
        with store.write(bulk=True) as s:
            info.rows["candidate_eval_values"] += insert_rows(s, CandidateEvalValue.__table__,
                                                              ("eval_id", "candidate_id", "bleu_4", "cider"), rows)
        print(f"  candidate values: {info.rows['candidate_eval_values']:,}", end="\r", flush=True)
    print()


def build_big_store(store: Store, spec: BigStoreSpec) -> BigStoreInfo:
    """Fill an empty store with the dataset, the MILS run, the baselines and (synthetic) metric values."""
    info = BigStoreInfo(dialect=store.dialect)
    started = time.perf_counter()
    specs, info.references_source = _item_specs(spec)
    summary = write_split(store, spec.dataset, "test", info.references_source, specs, allow_missing=True)
    info.rows["items"], info.rows["references"] = summary.items, summary.references
    with store.read() as s:
        split_id = s.scalar(select(Split.id).join(Dataset, Dataset.id == Split.dataset_id)
                            .where(Dataset.name == spec.dataset, Split.name == "test"))
        ids = dict(s.execute(select(Item.external_id, Item.id).where(Item.split_id == split_id)).all())
        known = set(s.scalars(select(Text.sha256)))
    items = [(ids[sp.external_id], [t for t, _ in sp.references] or ["a photo"]) for sp in specs]
    info.seconds["dataset"] = time.perf_counter() - started
    mark = time.perf_counter()
    info.runs["mils"] = _new_run(store, spec, "mils", split_id)
    _write_mils(store, spec, info.runs["mils"], items, info, known)
    info.seconds["mils"] = time.perf_counter() - mark
    mark = time.perf_counter()
    for method in spec.baselines:
        info.runs[method] = _new_run(store, spec, method, split_id)
        _write_baseline(store, spec, info.runs[method], items, info, known)
    info.seconds["baselines"] = time.perf_counter() - mark
    if spec.metrics == "synthetic":
        mark = time.perf_counter()
        _write_synthetic_metrics(store, spec, info.runs, info)
        info.seconds["metrics"] = time.perf_counter() - mark
    info.seconds["total"] = time.perf_counter() - started
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", required=True, help="an empty store: a SQLite path or a PostgreSQL URL")
    for name, default in (("items", 5000), ("iterations", 10), ("candidates", 50), ("variants", 180), ("seed", 0)):
        parser.add_argument(f"--{name}", type=int, default=default)
    parser.add_argument("--metrics", choices=("synthetic", "none"), default="synthetic")
    parser.add_argument("--references", help="a COCO captions file (default: the shared Karpathy test file)")
    parser.add_argument("--json", help="write what was built to this file")
    parser.add_argument("--sizes", metavar="DIR", help="SQLite: measure the store against its Parquet export in DIR")
    args = parser.parse_args()
    spec = BigStoreSpec(items=args.items, iterations=args.iterations, candidates=args.candidates,
                        variants=args.variants, seed=args.seed, metrics=args.metrics, references=args.references)
    store = open_store(args.db)
    try:
        with store.read() as s:
            if s.scalar(select(func.count()).select_from(Run)):
                sys.exit(f"{args.db} already holds runs: give an empty store")
        info = build_big_store(store, spec)
    finally:
        store.dispose()
    if store.dialect == "sqlite":
        path = Path(store.url.removeprefix("sqlite:///"))
        info.rows["file_bytes"] = path.stat().st_size + sum(
            p.stat().st_size for p in (path.with_name(path.name + "-wal"),) if p.exists())
    out = {"spec": asdict(spec), **asdict(info)}
    if args.sizes and store.dialect == "sqlite":
        out["sizes"] = measure_sizes(args.db, info.runs["mils"], Path(args.sizes))
    print(json.dumps(out, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))


def measure_sizes(db: str, run_id: int, out: Path) -> dict[str, Any]:
    """Bytes of the store's tables and indexes (``dbstat``), of ``capstore export --parquet`` of the run,
    and of its candidate values alone as zstd Parquet; the ratios of issue 15's storage goal."""
    import sqlite3

    import duckdb

    from capstore.analysis.export import export_parquet

    con = sqlite3.connect(db)
    try:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        by_name = dict(con.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name").fetchall())
        owner = dict(con.execute("SELECT name, tbl_name FROM sqlite_master").fetchall())
        n_values = con.execute("SELECT count(*) FROM candidate_eval_values").fetchone()[0]
        n_cands = con.execute("SELECT count(*) FROM candidates WHERE run_id = ?", (run_id,)).fetchone()[0]
    finally:
        con.close()
    tables: dict[str, int] = {}
    for name, size in by_name.items():
        tables[owner.get(name, name)] = tables.get(owner.get(name, name), 0) + int(size)
    store = open_store(db)
    try:
        started = time.perf_counter()
        files = export_parquet(store, [run_id], out / "export")
        export_seconds = time.perf_counter() - started
    finally:
        store.dispose()
    export = {p.name: p.stat().st_size for p in files}
    minimal = out / "candidate_values.parquet"
    duck = duckdb.connect()
    duck.execute(f"COPY (SELECT candidate_id, metric, value FROM read_parquet('{out / 'export' / 'metrics.parquet'}') "
                 f"WHERE scope = 'candidate' ORDER BY candidate_id, metric) TO '{minimal}' "
                 "(FORMAT parquet, COMPRESSION zstd)")
    metric_rows = duck.execute(f"SELECT count(*) FILTER (WHERE scope = 'candidate'), count(*) "
                               f"FROM read_parquet('{out / 'export' / 'metrics.parquet'}')").fetchone()
    duck.close()
    candidate_store = tables.get("candidate_eval_values", 0) + tables.get("candidate_evals", 0)
    legacy = tables.get("metric_values", 0)
    sizes = {"file_bytes": sum(tables.values()), "tables": dict(sorted(tables.items(), key=lambda kv: -kv[1])),
             "candidates": n_cands, "candidate_values": n_values * 2, "export_bytes": export,
             "export_seconds": round(export_seconds, 1), "export_metric_rows": list(metric_rows or ()),
             "candidate_values_parquet_bytes": minimal.stat().st_size,
             "candidate_values_store_bytes": candidate_store}
    sizes["ratio_candidate_values_vs_minimal_parquet"] = round(candidate_store / minimal.stat().st_size, 2)
    sizes["ratio_metrics_vs_export_metrics_parquet"] = round((candidate_store + legacy) / export["metrics.parquet"], 2)
    sizes["ratio_store_vs_export"] = round(sum(tables.values()) / sum(export.values()), 2)
    sizes["store_bytes_per_candidate"] = round(sum(tables.values()) / max(n_cands, 1), 1)
    return sizes


if __name__ == "__main__":
    main()
