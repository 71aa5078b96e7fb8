"""Texts/s of the tiny CLIP's text encoder: recomputed vs served from the store's embedding cache.

Usage::

    .venv/bin/python benchmarks/embedding_cache.py                      # SQLite + PostgreSQL (if reachable)
    .venv/bin/python benchmarks/embedding_cache.py --db sqlite --json out.json

The texts are the MILS pool (``data/mils/image_descriptions_per_class.txt`` under ``CAPSTORE_SHARED``
or ``../shared``). Three rates, CPU only:

- **recompute**: the model alone (``encode_text`` in batches of 256, no store) on the first 4,096
  texts, best of ``--repeat``: what a cache hit saves;
- **cold**: ``Scorer.encode_texts`` on an empty cache: hashing, the look-up, the model, and writing
  every embedding to the store (one transaction per batch);
- **cached**: ``encode_texts`` again from a newly built scorer (as another process or run would):
  the look-up alone, zero forward passes (checked). Best of ``--repeat``.

Goal: cached >= 20x recompute. Numbers: ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_common as bc  # noqa: E402

GOAL = 20.0


def recompute_rate(scorer, texts: list[str], repeat: int, n: int = 4096) -> float:  # type: ignore[no-untyped-def]
    """Texts/s of the model alone on the first ``n`` texts, batched as the scorer batches; best of ``repeat``."""
    scorer._encode_text_batch(texts[: scorer.batch_size])  # warm-up
    rates = []
    for _ in range(repeat):
        with bc.stopwatch() as t:
            for i in range(0, n, scorer.batch_size):
                scorer._encode_text_batch(texts[i : min(i + scorer.batch_size, n)])
        rates.append(n / t["s"])
    return max(rates)


def measure(url: str, spec: str, texts: list[str], repeat: int) -> dict[str, Any]:
    """Cold then cached rates on the store at ``url`` (which starts empty)."""
    from capstore.backends.registry import load_backend
    from capstore.store import open_store

    store = open_store(url)
    try:
        scorer = load_backend("scorer", spec, store, device="cpu")
        with bc.stopwatch() as cold:
            first = scorer.encode_texts(texts)
        cached = []
        for _ in range(repeat):
            again = load_backend("scorer", spec, store, device="cpu")
            with bc.stopwatch() as t:
                second = again.encode_texts(texts)
            assert again.forward_passes == 0, "the cached pass ran the model"
            assert (second == first).all(), "the cache returned other vectors"
            cached.append(len(texts) / t["s"])
        return {"cold_texts_per_s": len(texts) / cold["s"], "cold_s": cold["s"], "cached_texts_per_s": max(cached),
                "cached_s": len(texts) / max(cached), "cached_runs": cached}
    finally:
        store.dispose()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--db", choices=("both", "sqlite", "postgresql"), default="both")
    p.add_argument("--pg-url", default=bc.PG_DEFAULT)
    p.add_argument("--models", default=str(bc.REPO / "capstore-data" / "models"), help="tiny models folder")
    p.add_argument("--pool", type=Path, default=None, help="texts, one a line (default: the shared MILS pool)")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--json", default=None)
    args = p.parse_args()

    import torch

    from capstore.backends.registry import load_backend
    from capstore.store import open_store

    lines = (args.pool or bc.shared_file(bc.POOL)).read_text(encoding="utf-8").splitlines()
    texts = list(dict.fromkeys(x.strip() for x in lines if x.strip()))
    spec = bc.tiny_models(args.models).specs["scorer"]
    res: dict[str, Any] = {"machine": bc.machine(), "torch_threads": torch.get_num_threads(), "lines": len(lines),
                           "unique_texts": len(texts), "batch_size": 256}
    res["load_average_at_start"] = os.getloadavg()[0]
    print(f"{res['machine']}; {len(lines)} lines, {len(texts)} unique texts; tiny CLIP on CPU", flush=True)

    tmp = tempfile.mkdtemp(prefix="capstore-embcache-")
    probe = open_store(str(Path(tmp) / "probe.db"))
    res["recompute_texts_per_s"] = recompute_rate(load_backend("scorer", spec, probe, device="cpu"), texts, args.repeat)
    probe.dispose()
    print(f"recompute (model only): {res['recompute_texts_per_s']:,.0f} texts/s", flush=True)

    dbs = ["sqlite", "postgresql"] if args.db == "both" else [args.db]
    for db in dbs:
        if db == "sqlite":
            res[db] = measure(str(Path(tmp) / "cache.db"), spec, texts, args.repeat)
        elif bc.pg_reachable(args.pg_url):
            with bc.pg_schema(args.pg_url) as url:
                res[db] = measure(url, spec, texts, args.repeat)
        else:
            print(f"PostgreSQL not reachable at {args.pg_url}: skipped")
            continue
        r = res[db]
        r["speedup_vs_recompute"] = r["cached_texts_per_s"] / res["recompute_texts_per_s"]
        verdict = "meets" if r["speedup_vs_recompute"] >= GOAL else "MISSES"
        print(f"{db}: cold {r['cold_texts_per_s']:,.0f} texts/s ({r['cold_s']:.1f} s); cached "
              f"{r['cached_texts_per_s']:,.0f} texts/s ({r['cached_s']:.2f} s) = {r['speedup_vs_recompute']:.0f}x "
              f"recompute ({verdict} the {GOAL:.0f}x goal)", flush=True)
    bc.write_json(args.json, res)


if __name__ == "__main__":
    main()
