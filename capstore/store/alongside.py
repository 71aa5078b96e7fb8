"""Write transactions that do not depend on each other, run at the same time where the store allows.

PostgreSQL commits two transactions on two connections in parallel: while one waits for the
server, the other's Python builds its rows, and two server processes insert at once (a MILS
worker's new generations, scores and usage events beside its step commit). SQLite has one writer:
there they run one after the other, in the order given.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from typing import Callable, Iterator, Sequence, TypeVar

from capstore.store.engine import Store

T = TypeVar("T")


def write_alongside(store: Store, main: Callable[[], T], others: Sequence[Callable[[], None]]) -> T:
    """``main()``'s result, with ``others`` (each its own transaction) written in order before it
    (SQLite) or beside it, in order on one other thread and connection (PostgreSQL); all have ended,
    committed or failed, when this returns.

    Each must be correct without the others: a kill can leave any of them committed and not the
    rest. An error of ``others`` stops the ones after it (and, on SQLite, ``main``); it is raised
    after ``main`` ends, unless ``main`` raised one itself.
    """
    if not others or store.dialect != "postgresql":
        for write in others:
            write()
        return main()
    with ThreadPoolExecutor(1, thread_name_prefix="capstore-write") as pool:
        beside = pool.submit(lambda: [write() for write in others])
        try:
            result = main()
        finally:
            error = beside.exception()  # waits for them to end
    if error is not None:
        raise error
    return result


@contextmanager
def written_if_failed(writes: Sequence[Callable[[], None]]) -> Iterator[None]:
    """If the block raises, the ``writes`` collected so far are still done, each on its own (an error
    of one is dropped: the block's is the one raised), so that work done before the failure stays
    cached; then the block's error goes on."""
    try:
        yield
    except BaseException:
        for write in writes:
            with suppress(Exception):
                write()
        raise
