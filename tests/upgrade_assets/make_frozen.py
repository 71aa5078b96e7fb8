"""How the frozen stores ``0002.db`` … ``0005.db`` were made (run once each; kept for the record).

A store migrated only up to REVISION holding the rows an upgrade must carry through a table copy:
a run with candidates, a candidate-scope metric value referencing one of them, an iteration state
and a caption. ``test_store_upgrade.py`` checks they all survive the upgrade to head. From 0005 on
(whose upgrade moves candidate-scope values out of ``metric_values``) the store also holds CIDEr of
both candidates under two implementations, and corpus and item rows. Metric values are written by
SQL: the model no longer has their candidate column.

    .venv/bin/python tests/upgrade_assets/make_frozen.py tests/upgrade_assets/0002.db 0002   # with capstore at 0003
    .venv/bin/python tests/upgrade_assets/make_frozen.py tests/upgrade_assets/0003.db 0003   # with capstore at 0004
    .venv/bin/python tests/upgrade_assets/make_frozen.py tests/upgrade_assets/0004.db 0004   # with capstore at 0004
    .venv/bin/python tests/upgrade_assets/make_frozen.py tests/upgrade_assets/0005.db 0005   # with capstore at 0006
"""

from __future__ import annotations

import sys

from capstore.store import open_store
from capstore.store.content import put_texts
from capstore.store.migrate import upgrade
from sqlalchemy import text

from capstore.store.schema import Candidate, Caption, Dataset, IterationState, Item, Reference, Run, Split, WorkItem

VALUE_SQL = text("INSERT INTO metric_values (run_id, metric, scope, subject, item_id, candidate_id, value, "
                 "implementation, created_at) VALUES (:run, :metric, :scope, :subject, :item, :cand, :value, :impl, "
                 "'2026-12-01 00:00:00')")


def _value(s, run: int, metric: str, value: float, impl: str, item: int | None = None,  # type: ignore[no-untyped-def]
           cand: int | None = None) -> None:
    scope, subject = (("candidate", f"candidate:{cand}") if cand is not None
                      else ("item", f"item:{item}") if item is not None else ("corpus", "corpus"))
    s.execute(VALUE_SQL, {"run": run, "metric": metric, "scope": scope, "subject": subject, "item": item,
                          "cand": cand, "value": value, "impl": impl})


def make(path: str, revision: str) -> None:
    store = open_store(path, upgrade=False)
    upgrade(store, revision)
    with store.write() as s:
        ds = Dataset(name="frozen")
        s.add(ds)
        s.flush()
        split = Split(dataset_id=ds.id, name="test")
        s.add(split)
        s.flush()
        item = Item(split_id=split.id, external_id="1")
        s.add(item)
        s.flush()
        ref, a, b = put_texts(s, ["a frozen reference caption", "a frozen candidate", "another frozen candidate"])
        s.add(Reference(item_id=item.id, ordinal=0, text_sha=ref))
        run = Run(method="mils", config={"iterations": 0}, config_hash="f" * 64, split_id=split.id, status="done")
        s.add(run)
        s.flush()
        s.add(WorkItem(run_id=run.id, item_id=item.id, status="done", iterations_done=0))
        cands = [Candidate(run_id=run.id, item_id=item.id, iteration=0, text_sha=sha, origin=origin, score=sc, rank=r)
                 for r, (sha, origin, sc) in enumerate([(a, "pool", 0.3), (b, "generated", 0.2)], start=1)]
        s.add_all(cands)
        s.flush()
        _value(s, run.id, "Bleu_4", 0.5, "frozen", item.id, cands[0].id)
        if revision >= "0005":
            _value(s, run.id, "CIDEr", 0.75, "frozen")
            _value(s, run.id, "CIDEr", 0.75, "frozen", item.id)
            for impl, scale in (("frozen", 1.0), ("frozen-2", 2.0)):
                for c, v in zip(cands, (1.0 / 3.0, 0.1)):
                    _value(s, run.id, "CIDEr", v * scale, impl, item.id if impl == "frozen" else None, c.id)
        s.add(IterationState(run_id=run.id, item_id=item.id, iteration=0, best_text_sha=a, best_score=0.3,
                             mean_kept_score=0.25, n_new=2, kept=[[a, 0.3], [b, 0.2]]))
        s.add(Caption(run_id=run.id, item_id=item.id, text_sha=a, score=0.3, iteration=0))
    store.dispose()


if __name__ == "__main__":
    make(sys.argv[1], sys.argv[2])
