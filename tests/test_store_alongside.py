"""Independent write transactions beside each other: in parallel on PostgreSQL, in order on SQLite."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import func, select

from capstore.store.alongside import write_alongside
from capstore.store.content import put_texts
from capstore.store.engine import Store
from capstore.store.schema import Text


def _count(store: Store) -> int:
    with store.read() as s:
        return int(s.scalar(select(func.count()).select_from(Text)) or 0)


def test_the_writes_beside_the_main_one_run_at_the_same_time_on_postgresql_in_order_on_sqlite(store: Store) -> None:
    parallel = store.dialect == "postgresql"
    meet = threading.Barrier(2, timeout=10)  # passed only by two transactions open at the same time
    order: list[str] = []

    def write(text: str) -> None:
        def unit(s) -> None:  # type: ignore[no-untyped-def]
            put_texts(s, [text])
            if parallel:
                meet.wait()
        store.transact(unit)
        order.append(text)

    assert write_alongside(store, lambda: write("main") or 7, [lambda: write("beside")]) == 7
    assert _count(store) == 2  # both committed when it returns
    if not parallel:
        assert order == ["beside", "main"]  # SQLite's one writer: the writes beside first, as given


def test_an_error_beside_is_raised_after_the_main_write_commits(store: Store) -> None:
    def failing() -> None:
        raise RuntimeError("the cache write failed")

    with pytest.raises(RuntimeError, match="the cache write failed"):
        write_alongside(store, lambda: store.transact(lambda s: put_texts(s, ["main"])), [failing])
    if store.dialect == "postgresql":  # main ran beside it and committed; on SQLite it never started
        assert _count(store) == 1


def test_an_error_in_the_main_write_waits_for_the_others_to_end(store: Store) -> None:
    def main() -> None:
        raise ValueError("the steps' commit failed")

    with pytest.raises(ValueError, match="the steps' commit failed"):
        write_alongside(store, main, [lambda: store.transact(lambda s: put_texts(s, ["beside"]))])
    assert _count(store) == 1  # the write beside it has ended, committed, when the error comes
