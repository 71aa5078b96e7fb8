"""Frozen old stores (one per schema revision, in tests/upgrade_assets/) upgrade with their data intact."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from capstore.store import open_store
from capstore.store.content import get_texts
from capstore.store.migrate import alembic_config, current_revision, head_revision, upgrade
from capstore.store.schema import Candidate, Caption, Dataset, IterationState, MetricValue, Reference

ASSETS = Path(__file__).parent / "upgrade_assets"


@pytest.mark.parametrize("frozen", sorted(p.name for p in ASSETS.glob("*.db")))
def test_frozen_store_upgrades_to_head(frozen: str, tmp_path: Path) -> None:
    path = tmp_path / frozen
    shutil.copy(ASSETS / frozen, path)
    store = open_store(str(path))  # every command upgrades before use
    assert current_revision(store) == head_revision()
    with store.read() as s:
        assert s.scalar(select(Dataset.name)) == "frozen"
        ref_sha = s.scalar(select(Reference.text_sha))
        assert get_texts(s, [ref_sha]) == {ref_sha: "a frozen reference caption"}
        assert s.scalar(select(func.count()).select_from(Reference)) == 1
    store.dispose()


def _candidates_ddl(store) -> str:  # type: ignore[no-untyped-def]
    with store.engine.connect() as conn:
        return conn.exec_driver_sql("SELECT sql FROM sqlite_master WHERE name = 'candidates'").scalar()


def test_0002_store_keeps_candidates_and_their_metric_values_through_the_table_copy(tmp_path: Path) -> None:
    """0003 rebuilds ``candidates`` on SQLite: rows, ids and the rows referencing them must survive."""
    path = tmp_path / "0002.db"
    shutil.copy(ASSETS / "0002.db", path)
    store = open_store(str(path))
    assert current_revision(store) == head_revision()
    assert "origin IN" not in _candidates_ddl(store) and "origin = 'seed'" in _candidates_ddl(store)
    with store.read() as s:
        cands = s.execute(select(Candidate.id, Candidate.origin, Candidate.rank).order_by(Candidate.id)).all()
        assert [tuple(c) for c in cands] == [(1, "pool", 1), (2, "generated", 2)]
        assert s.scalars(select(MetricValue.candidate_id).where(MetricValue.scope == "candidate")).all() == [1]
        assert s.scalar(select(func.count()).select_from(IterationState)) == 1
        assert s.scalar(select(func.count()).select_from(Caption)) == 1
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1  # enforcement back on after the copy
    # The rule itself is unchanged: an unknown origin is still refused.
    with pytest.raises(IntegrityError, match="ck_candidates_origin|CHECK"):
        with store.write() as s:
            s.add(Candidate(run_id=1, item_id=1, iteration=1, text_sha=s.scalar(select(Candidate.text_sha)),
                            origin="made-up"))
    store.dispose()


def test_0003_upgrade_and_downgrade_on_postgresql(pg_url: str) -> None:
    store = open_store(pg_url, upgrade=False)
    upgrade(store, "0002")
    with store.engine.connect() as conn:
        before = conn.exec_driver_sql("SELECT pg_get_constraintdef(oid) FROM pg_constraint "
                                      "WHERE conname = 'ck_candidates_origin' "
                                      "AND connamespace = current_schema()::regnamespace").scalar()
    upgrade(store)
    with store.engine.connect() as conn:
        after = conn.exec_driver_sql("SELECT pg_get_constraintdef(oid) FROM pg_constraint "
                                     "WHERE conname = 'ck_candidates_origin' "
                                     "AND connamespace = current_schema()::regnamespace").scalar()
    assert "ANY" in before and "OR" in after and "seed" in after
    command.downgrade(alembic_config(store), "0002")
    assert current_revision(store) == "0002"
    store.dispose()
