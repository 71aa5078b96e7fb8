"""A model that emits NUL characters or lone surrogates: the run goes on, the same on both engines."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from capstore.backends.base import Generation, storable
from capstore.datasets import make_demo
from capstore.store import open_store
from capstore.store.schema import Candidate, Text
from tests.bad_input import invoke
from tests.run_helpers import mils_args


def test_storable_drops_nul_and_replaces_lone_surrogates() -> None:
    assert storable("a\x00b") == "ab"
    assert storable("x\ud800y") == "x?y"
    assert Generation(text="1. a\x00 cat\udfff").text == "1. a cat?"
    assert storable("plain ünïcode ✓") == "plain ünïcode ✓"


def test_mils_run_with_a_binary_spewing_generator_finishes(db_url: str, tiny_models, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    store = open_store(db_url)
    make_demo(store)
    result = invoke([*mils_args(tmp_path, tiny_models.specs["scorer"], generator="fake:binary", iterations=1,
                                extra=("--limit", "2")), "--db", db_url])
    assert result.exit_code == 0 and "2/2 items done" in result.output, result.output
    with store.read() as s:
        texts = s.scalars(select(Text.text).join(Candidate, Candidate.text_sha == Text.sha256)
                          .where(Candidate.origin == "generated")).all()
    assert texts and all("\x00" not in t for t in texts) and any("? that" in t or " that?" in t for t in texts)
    store.dispose()
