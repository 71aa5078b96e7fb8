"""Two processes importing at once into one store do not corrupt it (SQLite file and PostgreSQL)."""

from __future__ import annotations

import subprocess
import sys

from sqlalchemy import func, select

from capstore.store import open_store
from capstore.store.schema import Dataset, Image, Item, Reference

IMPORT = "from capstore.store import open_store; from capstore.datasets import make_demo; import sys; print(make_demo(open_store(sys.argv[1])).describe())"


def test_two_processes_import_the_demo_at_once(db_url: str) -> None:
    procs = [subprocess.Popen([sys.executable, "-c", IMPORT, db_url], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outputs = [p.communicate(timeout=240) for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    said = [out for out, _ in outputs]
    assert sum("already imported" in o for o in said) == 1  # exactly one did the work
    assert sum("added 24 of 24 items" in o for o in said) == 1
    store = open_store(db_url)
    with store.read() as s:
        counts = [s.scalar(select(func.count()).select_from(m)) for m in (Dataset, Item, Reference, Image)]
    assert counts == [1, 24, 120, 24]
    store.dispose()
