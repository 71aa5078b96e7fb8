"""How long ``capstore eval`` takes on a 5,000-image results file, against the coco-caption procedure.

Usage::

    .venv/bin/python benchmarks/eval_speed.py                       # shared data from $CAPSTORE_SHARED or ../shared
    .venv/bin/python benchmarks/eval_speed.py --candidates 10 --json out.json

Data: the Karpathy test split's annotations (5,000 images); each image's first reference becomes its
"caption" and the other references (20,010) are the dataset's references (the images themselves are
not needed). Measured, all in one process, on the same inputs:

1. **naive coco-caption**: what scripts built on coco-caption often do, one metric at a time, each
   with its own PTBTokenizer pass over references and captions (two JVM starts per metric);
2. **COCOEvalCap order**: tokenize once, then Bleu(4), Meteor, Rouge, Cider one after the other;
3. **capstore**: ``import_results`` + ``evaluate_run`` (one tokenizer JVM for both sides, METEOR's
   JVM working while BLEU/ROUGE-L/CIDEr are computed, 35,007 metric rows written);
4. **capstore again**: ``evaluate_run`` on the unchanged run (served from the store), in-process and
   as the ``capstore eval`` command (a new Python process: its start-up counts);
5. optionally ``--candidates N``: N synthetic candidates per image (references of other images),
   scored by ``evaluate_run(candidates=True)``.

The values of 1, 2 and 3 must agree to 1e-9. Numbers and the machine: ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from sqlalchemy import select

from capstore.datasets import add_coco
from capstore.metrics import COCO_METRICS, evaluate_run
from capstore.results_io import import_results
from capstore.store import open_store
from capstore.store.content import insert_ignore, put_texts
from capstore.store.schema import Candidate, Item

REPO = Path(__file__).resolve().parents[1]
SCORERS = (("Bleu", ["Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4"]), ("Meteor", "METEOR"), ("Rouge", "ROUGE_L"),
           ("Cider", "CIDEr"))


def shared_dir() -> Path:
    return Path(os.environ.get("CAPSTORE_SHARED", REPO.parent / "shared"))


def split_references(path: Path) -> tuple[dict[str, Any], dict[int, list[str]], dict[int, str]]:
    """(COCO file without each image's first reference, remaining references, first references)."""
    data = json.loads(path.read_text())
    held: dict[int, str] = {}
    refs: dict[int, list[str]] = {}
    kept = []
    for ann in data["annotations"]:
        if ann["image_id"] in held:
            kept.append(ann)
            refs.setdefault(ann["image_id"], []).append(ann["caption"])
        else:
            held[ann["image_id"]] = ann["caption"]
    return {"images": data["images"], "annotations": kept}, refs, held


def _scorer(name: str) -> Any:
    import importlib

    module = {"Bleu": "bleu.bleu", "Meteor": "meteor.meteor", "Rouge": "rouge.rouge", "Cider": "cider.cider"}[name]
    cls = getattr(importlib.import_module(f"pycocoevalcap.{module}"), name)
    return cls(4) if name == "Bleu" else cls()


def _record(out: dict[str, float], names: Any, score: Any) -> None:
    if isinstance(names, list):
        out.update(zip(names, (float(s) for s in score)))
    else:
        out[names] = float(score)


def coco_caption(refs: dict[int, list[str]], caps: dict[int, str], per_metric_tokenize: bool) -> dict[str, float]:
    """The coco-caption computation on plain dicts; tokenizing once, or once per metric."""
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    gts = {k: [{"caption": c} for c in v] for k, v in refs.items()}
    res = {k: [{"caption": caps[k]}] for k in refs}
    out: dict[str, float] = {}
    tokens = None
    for name, names in SCORERS:
        if tokens is None or per_metric_tokenize:
            tokenizer = PTBTokenizer()
            tokens = tokenizer.tokenize(gts), tokenizer.tokenize(res)
        scorer = _scorer(name)
        score, _ = scorer.compute_score(*tokens) if name != "Bleu" else scorer.compute_score(*tokens, verbose=0)
        _record(out, names, score)
    return out


def timed(label: str, fn: Callable[[], Any], times: dict[str, float]) -> Any:
    start = time.perf_counter()
    value = fn()
    times[label] = time.perf_counter() - start
    print(f"{label:<42} {times[label]:8.2f} s", flush=True)
    return value


def add_candidates(store: Any, run_id: int, refs: dict[int, list[str]], per_item: int) -> int:
    """``per_item`` candidates per image: references of random other images (texts repeat, as in MILS)."""
    rng = random.Random(0)
    pool = [r for rs in refs.values() for r in rs]
    with store.write() as s:
        items = dict(s.execute(select(Item.external_id, Item.id)).all())
        rows, texts = [], []
        for image_id in refs:
            chosen = list(dict.fromkeys(rng.choice(pool) for _ in range(per_item)))
            texts.extend(chosen)
            rows.extend({"run_id": run_id, "item_id": items[str(image_id)], "iteration": 0, "text": t,
                         "origin": "baseline", "score": None, "rank": None} for t in chosen)
        shas = dict(zip(texts, put_texts(s, texts)))
        for r in rows:
            r["text_sha"] = shas[r.pop("text")]
        insert_ignore(s, Candidate, rows)
    return len(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--candidates", type=int, default=0, help="Synthetic candidates per image (0: none).")
    parser.add_argument("--json", type=Path, default=None, help="Also write the numbers here.")
    args = parser.parse_args()
    annotations = shared_dir() / "data/coco-karpathy-test/captions_karpathy_test.json"
    if not annotations.is_file():
        sys.exit(f"shared data not found: {annotations} (set CAPSTORE_SHARED)")
    coco, refs, caps = split_references(annotations)
    times: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="capstore-eval-bench-") as tmp:
        tmp_path = Path(tmp)
        (tmp_path / "refs.json").write_text(json.dumps(coco))
        results = tmp_path / "results.json"
        results.write_text(json.dumps([{"image_id": k, "caption": c} for k, c in caps.items()]))
        db = tmp_path / "store.db"
        store = open_store(str(db))
        add_coco(store, "karpathy", tmp_path / "refs.json", annotations.parent / "images", allow_missing_images=True)
        coco_caption({k: refs[k] for k in list(refs)[:50]}, caps, False)  # warm the disk cache for both sides
        naive = timed("naive coco-caption (tokenize per metric)", lambda: coco_caption(refs, caps, True), times)
        once = timed("COCOEvalCap order (tokenize once)", lambda: coco_caption(refs, caps, False), times)
        run_id = timed("capstore import-results", lambda: import_results(store, results, "karpathy", "bench")[0], times)
        first = timed("capstore eval (computes)", lambda: evaluate_run(store, run_id, clip_scorer=None,
                                                                       progress=False), times)
        times["capstore import + eval"] = times["capstore import-results"] + times["capstore eval (computes)"]
        again = timed("capstore eval again (in-process)", lambda: evaluate_run(store, run_id, clip_scorer=None,
                                                                               progress=False), times)
        cmd = [sys.executable, "-m", "capstore.cli.main", "eval", str(run_id), "--no-clipscore", "--quiet", "--db", str(db)]
        cli = timed("capstore eval again (CLI, new process)", lambda: subprocess.run(cmd, capture_output=True, text=True),
                    times)
        assert cli.returncode == 0 and "all values from the store" in cli.stdout, cli.stdout + cli.stderr
        assert again.from_store and not first.from_store
        for metric in COCO_METRICS:
            assert abs(first.corpus[metric] - naive[metric]) <= 1e-9, metric
            assert abs(first.corpus[metric] - once[metric]) <= 1e-9, metric
        counts: dict[str, int] = {}
        if args.candidates:
            counts["candidates"] = add_candidates(store, run_id, refs, args.candidates)
            timed(f"capstore eval --candidates ({counts['candidates']:,} candidates)",
                  lambda: evaluate_run(store, run_id, candidates=True, clip_scorer=None, progress=False), times)
    print("corpus values (all three equal to 1e-9): " + ", ".join(f"{m} {first.corpus[m]:.4f}" for m in COCO_METRICS))
    print(f"capstore import + eval / naive: {times['capstore import + eval'] / times['naive coco-caption (tokenize per metric)']:.2f}")
    if args.json:
        args.json.write_text(json.dumps({"seconds": times, "corpus": first.corpus, **counts}, indent=2))


if __name__ == "__main__":
    main()
