"""How many of three workers started together encode the MILS pool (runs on old capstore trees too).

A fresh SQLite store, the demo dataset, a MILS run (tiny CLIP on CPU, ``fake:mutate``, 1 iteration,
4 images a batch), three ``capstore worker`` processes started at once; then the ``encode_pool``
usage events: how many computed embeddings, and how many embeddings were computed in all. It uses
only what older capstore versions have, so an extracted old tree can be measured the same way:

    .venv/bin/python benchmarks/pool_encodes.py /tmp/after.db open_clip:capstore-data/models/clip POOL PROMPT
    PYTHONPATH=/tmp/old .venv/bin/python benchmarks/pool_encodes.py /tmp/before.db ...   # git archive OLD | tar -x -C /tmp/old
"""

from __future__ import annotations

import subprocess
import sys
import time

from sqlalchemy import text


def main() -> None:
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    import capstore
    from capstore.datasets import make_demo
    from capstore.runs import RunConfig, create_run
    from capstore.store import open_store

    db, scorer, pool, prompt = sys.argv[1:5]
    print("capstore from", capstore.__file__)
    store = open_store(db)
    make_demo(store)
    cfg = RunConfig(method="mils", dataset="demo", scorer=scorer, generator="fake:mutate", iterations=1, keep=5,
                    requested=8, batch_images=4, device="cpu")
    run_id = create_run(store, cfg, pool_file=pool, prompt_file=prompt)
    start = time.time()
    procs = [subprocess.Popen([sys.executable, "-m", "capstore.cli.main", "worker", str(run_id), "--quiet", "--db", db],
                              stdout=subprocess.DEVNULL) for _ in range(3)]
    print("exit codes", [p.wait() for p in procs], f"in {time.time() - start:.1f} s")
    with store.read() as s:
        rows = s.execute(text("SELECT items, cached, calls FROM usage_events WHERE stage = 'encode_pool'")).all()
    print(f"encode_pool events: {len(rows)}; that computed embeddings: {sum(1 for r in rows if r.calls > 0)}; "
          f"embeddings computed: {sum(r.items - r.cached for r in rows)} of {max(r.items for r in rows)} distinct")


if __name__ == "__main__":
    main()
