"""``capstore eval --candidates`` on a full-size run: where the time goes, and a check against pycocoevalcap.

Usage::

    .venv/bin/python benchmarks/big_store.py --db /tmp/big/store.db          # once: 2.5M candidates
    .venv/bin/python benchmarks/eval_candidates.py --db /tmp/big/store.db --run 1 --check 3000 --json out.json
    .venv/bin/python benchmarks/eval_candidates.py --db /tmp/big/store.db --fresh     # again, tokens cached

Runs ``evaluate_run(store, RUN, candidates=True, clip_scorer=None)`` and times its phases by
wrapping the functions that do them: tokens (``ensure_tokens``: the mirror sync, the Java
tokenizer for texts never tokenized, writing their tokens), the caption metrics, every query of
``sql/candidate_metrics.sql`` (1,000 items each) and the bulk write of the candidate values.
``--check N`` then scores N random candidates with pycocoevalcap's own ``BleuScorer`` and
``CiderScorer`` (the run's evaluated set's document frequencies) and prints the largest difference.
Numbers and the machine: ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import capstore.metrics.duckdb_metrics as duckdb_metrics  # noqa: E402
import capstore.metrics.evaluate as evaluate  # noqa: E402
import capstore.metrics.text_tokens as text_tokens  # noqa: E402
from capstore.analysis.duckdb_store import open_for_reading  # noqa: E402

PHASES: list[tuple[str, float, float]] = []  # (name, start, end) since the eval started
T0 = 0.0


def timed(owner: Any, name: str, label: str) -> None:
    """Record each call of ``owner.name`` as a phase ``label``."""
    original: Callable[..., Any] = getattr(owner, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter() - T0
        try:
            return original(*args, **kwargs)
        finally:
            PHASES.append((label, start, time.perf_counter() - T0))
            print(f"{PHASES[-1][2]:8.2f} s  {label}: {PHASES[-1][2] - start:.2f} s", flush=True)

    setattr(owner, name, wrapper)


def check(store: Any, run: int, sample: int) -> float:
    """The largest difference between stored candidate values and pycocoevalcap's on ``sample`` candidates."""
    sys.path.insert(0, str(REPO))
    from sqlalchemy import select

    from capstore.analysis.duckdb_store import connect
    from capstore.metrics.store_values import load_inputs, stored_candidate_values
    from capstore.store.schema import Candidate
    from tests.test_metrics_sql import pycoco_candidates

    inputs = load_inputs(store, run)
    con = connect(store, passthrough=False)
    try:
        ptb = dict(con.execute("SELECT text_sha, ptb FROM text_tokens").fetchall())
    finally:
        con.close()
    refs = {i: [ptb[s] for s in inputs.refs[i]] for i in inputs.with_refs}
    with store.read() as s:
        cands = s.execute(select(Candidate.id, Candidate.item_id, Candidate.text_sha).where(Candidate.run_id == run)).all()
        chosen = random.Random(0).sample(cands, min(sample, len(cands)))
    stored = {k: v for k, (v, _) in stored_candidate_values(store, run).items()}
    bleu, cider = pycoco_candidates([(i, ptb[sha]) for _, i, sha in chosen], refs)
    return max(max(abs(stored[("Bleu_4", c)] - b), abs(stored[("CIDEr", c)] - d))
               for (c, _, _), b, d in zip(chosen, bleu, cider))


def main() -> None:
    global T0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", required=True)
    parser.add_argument("--run", type=int, default=1)
    parser.add_argument("--check", type=int, default=0, help="candidates to check against pycocoevalcap")
    parser.add_argument("--fresh", action="store_true",
                        help="compute the candidate values again even if the stored ones are current")
    parser.add_argument("--json")
    args = parser.parse_args()
    timed(text_tokens, "ensure_tokens", "tokens (sync, tokenizer, token writes)")
    timed(text_tokens, "ptb_tokenize", "  of which the Java tokenizer")
    timed(duckdb_metrics.MetricSession, "caption_metrics", "caption BLEU/CIDEr-D (DuckDB)")
    timed(evaluate, "replace_candidate_values", "candidate values written (bulk)")
    queries = duckdb_metrics.MetricSession.candidate_metrics

    def candidate_metrics(self: Any, *a: Any, **k: Any) -> Any:
        start = time.perf_counter() - T0
        for table in queries(self, *a, **k):
            end = time.perf_counter() - T0
            PHASES.append((f"candidate query ({table.num_rows:,} candidates)", start, end))
            print(f"{end:8.2f} s  {PHASES[-1][0]}: {end - start:.2f} s", flush=True)
            yield table
            start = time.perf_counter() - T0

    duckdb_metrics.MetricSession.candidate_metrics = candidate_metrics  # type: ignore[method-assign]
    store = open_for_reading(args.db)
    if args.fresh:  # forget that the candidate values are current (they are replaced, not added to)
        from capstore.metrics.names import CANDIDATE_METRICS
        from capstore.metrics.store_values import set_corpus_details, stored_corpus

        for row in stored_corpus(store, args.run, CANDIDATE_METRICS):
            details = {k: v for k, v in row.details.items() if k != "candidates"}
            set_corpus_details(store, args.run, row.metric, row.implementation, details)
    T0 = time.perf_counter()
    result = evaluate.evaluate_run(store, args.run, candidates=True, clip_scorer=None, progress=False)
    total = time.perf_counter() - T0
    out: dict[str, Any] = {"candidates": result.candidates, "total_s": total, "phases": PHASES,
                           "computed": result.computed}
    queries_s = sum(e - s for name, s, e in PHASES if name.startswith("candidate query"))
    print(f"total {total:.1f} s; candidate queries {queries_s:.1f} s; {result.candidates:,} candidates")
    if args.check:
        out["max_difference"] = check(store, args.run, args.check)
        print(f"largest difference from pycocoevalcap on {args.check} candidates: {out['max_difference']:.3g}")
    store.dispose()
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
