"""Frozen old stores (one per schema revision, in tests/upgrade_assets/) upgrade with their data intact."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from sqlalchemy import func, select

from capstore.store import open_store
from capstore.store.content import get_texts
from capstore.store.migrate import current_revision, head_revision
from capstore.store.schema import Dataset, Reference

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
