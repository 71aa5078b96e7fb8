"""How ``0002.db`` was made (run once with capstore at schema revision 0003; kept for the record).

A store migrated only up to 0002 holding the rows an upgrade must carry through a table copy:
a run with candidates, a candidate-scope metric value referencing one of them, an iteration state
and a caption. ``test_store_upgrade.py`` checks they all survive the upgrade to head.

    .venv/bin/python tests/upgrade_assets/make_0002.py tests/upgrade_assets/0002.db
"""

from __future__ import annotations

import sys

from capstore.store import open_store
from capstore.store.content import put_texts
from capstore.store.migrate import upgrade
from capstore.store.schema import (Candidate, Caption, Dataset, IterationState, Item, MetricValue, Reference, Run,
                                   Split, WorkItem)


def make(path: str) -> None:
    store = open_store(path, upgrade=False)
    upgrade(store, "0002")
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
        s.add(MetricValue(run_id=run.id, metric="Bleu_4", scope="candidate", subject=f"candidate:{cands[0].id}",
                          item_id=item.id, candidate_id=cands[0].id, value=0.5, implementation="frozen"))
        s.add(IterationState(run_id=run.id, item_id=item.id, iteration=0, best_text_sha=a, best_score=0.3,
                             mean_kept_score=0.25, n_new=2, kept=[[a, 0.3], [b, 0.2]]))
        s.add(Caption(run_id=run.id, item_id=item.id, text_sha=a, score=0.3, iteration=0))
    store.dispose()


if __name__ == "__main__":
    make(sys.argv[1])
