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


def test_a_store_made_by_another_process_after_the_revision_was_read_is_not_foreign(db_url: str, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The race of the test above, made certain: this process reads "no revision", then another
    process creates the store before this one looks at the tables. It must go on, not call capstore's
    own tables "something else"."""
    from capstore.store import migrate

    open_store(db_url).engine.dispose()  # the other process: the store now exists, at head
    real = migrate.current_revision
    reads: list[str | None] = []

    def first_read_before_the_commit(store):  # type: ignore[no-untyped-def]
        reads.append(None if not reads else real(store))
        return reads[-1]

    monkeypatch.setattr(migrate, "current_revision", first_read_before_the_commit)
    store = open_store(db_url)
    assert real(store) == migrate.head_revision()
