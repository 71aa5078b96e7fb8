"""Shared fixtures: a fresh store on SQLite and on the real PostgreSQL, the shared data folder."""

from __future__ import annotations

import os
import signal
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from capstore.store import Store, open_store

PG_URL = os.environ.get("CAPSTORE_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REPO = Path(__file__).resolve().parents[1]
# Analysis mirrors of PostgreSQL test stores go to a per-run folder, not the user's cache.
os.environ.setdefault("CAPSTORE_CACHE_DIR", os.path.join(os.environ.get("TMPDIR", "/tmp"), f"capstore-test-cache-{os.getpid()}"))
# A suite started as a background job (`pytest &` in a script, no job control) inherits SIGINT ignored:
# Ctrl-C would then reach neither this process (`_thread.interrupt_main`) nor the commands it starts,
# and the tests of what Ctrl-C does would see no Ctrl-C at all.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def shared_dir() -> Path:
    """``CAPSTORE_SHARED`` or ``../shared`` beside the project."""
    return Path(os.environ.get("CAPSTORE_SHARED", REPO.parent / "shared"))


def need_shared(relative: str) -> Path:
    """The path of a shared data file, or skip the test saying what is missing."""
    path = shared_dir() / relative
    if not path.exists():
        pytest.skip(f"shared data {relative} not found under {shared_dir()} (set CAPSTORE_SHARED)")
    return path


def _pg_available() -> bool:
    import sqlalchemy

    try:
        engine = sqlalchemy.create_engine(PG_URL)
        with engine.connect():
            pass
        engine.dispose()
        return True
    except Exception:
        return False


def make_pg_url() -> Iterator[str]:
    """A URL whose search_path is a new, empty schema; the schema is dropped afterwards."""
    import sqlalchemy

    if not _pg_available():
        pytest.skip(f"PostgreSQL not reachable at {PG_URL} (set CAPSTORE_TEST_PG_URL)")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    engine = sqlalchemy.create_engine(PG_URL)
    with engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in PG_URL else "?"
    try:
        yield f"{PG_URL}{sep}options=-csearch_path%3D{schema}"
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        engine.dispose()


@pytest.fixture
def pg_url() -> Iterator[str]:
    yield from make_pg_url()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return str(tmp_path / "store.db")


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Parametrised: the same test on a SQLite file and on a PostgreSQL schema."""
    if request.param == "sqlite":
        yield str(tmp_path / "store.db")
    else:
        yield from make_pg_url()


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    """An upgraded, empty store on each database."""
    s = open_store(db_url)
    yield s
    s.dispose()


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory):  # -> TinyModels
    """The tiny offline models, built once per test session."""
    from capstore.backends.tiny import build_tiny_models

    return build_tiny_models(tmp_path_factory.mktemp("tiny-models"))


@pytest.fixture
def demo_store(sqlite_url: str) -> Iterator[Store]:
    """A SQLite store holding the demo dataset."""
    from capstore.datasets import make_demo

    s = open_store(sqlite_url)
    make_demo(s)
    yield s
    s.dispose()


def demo_images(store: Store, n: int = 24) -> list:
    """The first ``n`` demo images as ImageRefs."""
    from sqlalchemy import select

    from capstore.store.images import read_image
    from capstore.store.schema import Item

    with store.read() as s:
        shas = s.scalars(select(Item.image_sha).order_by(Item.external_id).limit(n)).all()
        return [read_image(s, sha) for sha in shas]
