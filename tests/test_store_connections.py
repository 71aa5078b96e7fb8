"""PostgreSQL connections of a store's pool: one the server closed is replaced, not handed out."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, text

from capstore.store import engine as engine_module
from capstore.store import open_store

pytestmark = pytest.mark.postgres


def _backend_pid(store) -> int:  # type: ignore[no-untyped-def]
    with store.read() as s:
        return int(s.execute(text("SELECT pg_backend_pid()")).scalar_one())


def _terminate(url: str, pid: int) -> None:
    admin = create_engine(url)
    with admin.connect() as c:
        assert c.execute(text("SELECT pg_terminate_backend(:p, 5000)"), {"p": pid}).scalar_one()
    admin.dispose()


def test_a_connection_the_server_closed_is_replaced_once_it_has_idled(pg_url: str,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A pooled connection idle for PING_AFTER_IDLE_S is pinged before use and replaced when the
    server closed it; one used back to back is not pinged (the cost of a round trip per transaction),
    so a server that closes it in between fails that one transaction, and the pool recovers."""
    store = open_store(pg_url)
    try:
        first = _backend_pid(store)
        _terminate(pg_url, first)
        monkeypatch.setattr(engine_module, "PING_AFTER_IDLE_S", 0.0)  # every checkout counts as idle
        second = _backend_pid(store)
        assert second != first
        _terminate(pg_url, second)
        monkeypatch.setattr(engine_module, "PING_AFTER_IDLE_S", 3600.0)  # not idle: not pinged
        with pytest.raises(Exception, match="(?i)terminat|closed|connection"):
            _backend_pid(store)
        assert _backend_pid(store) not in (first, second)  # the pool let the dead one go
    finally:
        store.dispose()


def _setting(store, name: str) -> str:  # type: ignore[no-untyped-def]
    with store.read() as s:
        return str(s.execute(text(f"SHOW {name}")).scalar_one())


def test_commits_do_not_wait_for_the_disk_unless_the_url_says_so(pg_url: str) -> None:
    """As SQLite's synchronous=NORMAL: the store's connections commit without waiting for the WAL's
    flush; the URL's own options (the fixture's search_path) are kept, and a URL that sets
    synchronous_commit itself keeps its value."""
    store = open_store(pg_url)
    try:
        assert _setting(store, "synchronous_commit") == "off"
        assert _setting(store, "search_path") == pg_url.rsplit("%3D", 1)[1]  # the URL's option still applies
    finally:
        store.dispose()
    durable = open_store(pg_url.replace("options=", "options=-c%20synchronous_commit%3Don%20"))
    try:
        assert _setting(durable, "synchronous_commit") == "on"
        assert _setting(durable, "search_path") == pg_url.rsplit("%3D", 1)[1]
    finally:
        durable.dispose()
