"""Write transactions that do not depend on each other, run at the same time where the store allows.

PostgreSQL commits two transactions on two connections in parallel: while one waits for the
server, the other's Python builds its rows, and two server processes insert at once (a worker's
score-cache write beside its step commit). SQLite has one writer: there they run one after the
other, in the order given.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence, TypeVar

from capstore.store.engine import Store

T = TypeVar("T")


def write_alongside(store: Store, main: Callable[[], T], others: Sequence[Callable[[], None]]) -> T:
    """``main()``'s result, with ``others`` (each its own transaction) written before it (SQLite) or
    beside it in threads (PostgreSQL); every one has ended, committed or failed, when this returns.

    Each must be correct without the others: a kill can leave any of them committed and not the
    rest. The first error raised (``main``'s first) is raised after all have ended.
    """
    if not others or store.dialect != "postgresql":
        for write in others:
            write()
        return main()
    with ThreadPoolExecutor(len(others), thread_name_prefix="capstore-write") as pool:
        futures = [pool.submit(write) for write in others]
        try:
            result = main()
        finally:
            errors = [f.exception() for f in futures]  # waits for each to end
    for error in errors:
        if error is not None:
            raise error
    return result
