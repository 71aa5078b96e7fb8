"""How long ``capstore eval`` takes on a 5,000-image results file, against pycocoevalcap in the same run.

Usage::

    .venv/bin/python benchmarks/eval_speed.py                       # shared data from $CAPSTORE_SHARED or ../shared
    .venv/bin/python benchmarks/eval_speed.py --rounds 3 --json out.json
    .venv/bin/python benchmarks/eval_speed.py --naive --candidates 10

Data: the Karpathy test split's annotations (5,000 images); each image's first reference becomes its
"caption" and the other references (20,010) are the dataset's references (the images themselves are
not needed). Each round, on the same inputs and in this order:

1. **pycocoevalcap, COCOEvalCap's order**: PTBTokenizer once over references and captions, then
   Bleu(4), Meteor, Rouge and Cider one after the other (what ``COCOEvalCap.evaluate`` does);
2. **capstore**: ``import_results`` + ``evaluate_run`` on a new store (nothing tokenized yet: one
   tokenizer JVM for both sides, BLEU/CIDEr-D in DuckDB, METEOR fed in batches in a background
   thread while the rest works, 35,007 metric rows written, the analysis mirror built);
3. **capstore, another run**: a second results file (each image's second reference) on the same
   store: the references' tokens come from the token cache, only the new captions are tokenized.

Then, once: ``evaluate_run`` on the unchanged run (served from the store), in-process and as the
``capstore eval`` command; with ``--naive``, the naive procedure (a tokenizer pass per metric); with
``--candidates N``, N synthetic candidates per image scored by ``evaluate_run(candidates=True)``.
The values of 1 and 2 must agree to 1e-9. Numbers and the machine: ``benchmarks/README.md``.
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


def capstore_round(tmp_path: Path, annotations: Path, results: Path, second: Path) -> dict[str, Any]:
    """A new store: import + eval of ``results``, then of ``second`` (references' tokens then cached)."""
    store = open_store(str(tmp_path / "store.db"))
    add_coco(store, "karpathy", tmp_path / "refs.json", annotations.parent / "images", allow_missing_images=True)
    out: dict[str, Any] = {}
    start = time.perf_counter()
    run_id = import_results(store, results, "karpathy", "bench")[0]
    out["result"] = evaluate_run(store, run_id, clip_scorer=None, progress=False)
    out["seconds"] = time.perf_counter() - start
    start = time.perf_counter()
    other = import_results(store, second, "karpathy", "bench-2")[0]
    evaluate_run(store, other, clip_scorer=None, progress=False)
    out["second_seconds"] = time.perf_counter() - start
    out["store"], out["run_id"] = store, run_id
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="Rounds of pycocoevalcap then capstore.")
    parser.add_argument("--naive", action="store_true", help="Also time a tokenizer pass per metric.")
    parser.add_argument("--candidates", type=int, default=0, help="Synthetic candidates per image (0: none).")
    parser.add_argument("--json", type=Path, default=None, help="Also write the numbers here.")
    args = parser.parse_args()
    annotations = shared_dir() / "data/coco-karpathy-test/captions_karpathy_test.json"
    if not annotations.is_file():
        sys.exit(f"shared data not found: {annotations} (set CAPSTORE_SHARED)")
    coco, refs, caps = split_references(annotations)
    second_caps = {k: v[0] for k, v in refs.items()}
    times: dict[str, float] = {}
    rounds: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="capstore-eval-bench-") as tmp:
        base = Path(tmp)
        (base / "refs.json").write_text(json.dumps(coco))
        results, second = base / "results.json", base / "second.json"
        results.write_text(json.dumps([{"image_id": k, "caption": c} for k, c in caps.items()]))
        second.write_text(json.dumps([{"image_id": k, "caption": c} for k, c in second_caps.items()]))
        coco_caption({k: refs[k] for k in list(refs)[:50]}, caps, False)  # warm the disk cache for both sides
        for r in range(args.rounds):
            once = timed(f"round {r + 1}: pycocoevalcap, COCOEvalCap order", lambda: coco_caption(refs, caps, False),
                         times)
            folder = base / f"round{r}"
            folder.mkdir()
            (folder / "refs.json").write_text((base / "refs.json").read_text())
            done = capstore_round(folder, annotations, results, second)
            first = done["result"]
            print(f"round {r + 1}: capstore import + eval{'':<20} {done['seconds']:8.2f} s", flush=True)
            print(f"round {r + 1}: capstore, another run (references cached) {done['second_seconds']:8.2f} s", flush=True)
            rounds.append({"pycocoevalcap_s": times[f"round {r + 1}: pycocoevalcap, COCOEvalCap order"],
                           "capstore_s": done["seconds"], "capstore_second_run_s": done["second_seconds"]})
            for metric in COCO_METRICS:
                assert abs(first.corpus[metric] - once[metric]) <= 1e-9, metric
            store, run_id = done["store"], done["run_id"]
            if r + 1 < args.rounds:
                store.dispose()
        db = base / f"round{args.rounds - 1}" / "store.db"
        again = timed("capstore eval again (in-process)", lambda: evaluate_run(store, run_id, clip_scorer=None,
                                                                               progress=False), times)
        cmd = [sys.executable, "-m", "capstore.cli.main", "eval", str(run_id), "--no-clipscore", "--quiet", "--db", str(db)]
        cli = timed("capstore eval again (CLI, new process)", lambda: subprocess.run(cmd, capture_output=True, text=True),
                    times)
        assert cli.returncode == 0 and "all values from the store" in cli.stdout, cli.stdout + cli.stderr
        assert again.from_store
        if args.naive:
            naive = timed("naive coco-caption (tokenize per metric)", lambda: coco_caption(refs, caps, True), times)
            for metric in COCO_METRICS:
                assert abs(first.corpus[metric] - naive[metric]) <= 1e-9, metric
        counts: dict[str, int] = {}
        if args.candidates:
            counts["candidates"] = add_candidates(store, run_id, refs, args.candidates)
            timed(f"capstore eval --candidates ({counts['candidates']:,} candidates)",
                  lambda: evaluate_run(store, run_id, candidates=True, clip_scorer=None, progress=False), times)
        store.dispose()
    ratios = [r["pycocoevalcap_s"] / r["capstore_s"] for r in rounds]
    print("corpus values (equal to 1e-9): " + ", ".join(f"{m} {first.corpus[m]:.4f}" for m in COCO_METRICS))
    print("pycocoevalcap / capstore per round: " + ", ".join(f"{x:.2f}" for x in ratios))
    if args.json:
        args.json.write_text(json.dumps({"rounds": rounds, "ratios": ratios, "seconds": times,
                                         "corpus": first.corpus, **counts}, indent=2))


if __name__ == "__main__":
    main()
