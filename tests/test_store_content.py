"""Content addressing and uniqueness: texts and images stored once, duplicates impossible (both databases)."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError

from capstore.datasets import add_images
from capstore.store.content import _MAX_PARAMS, get_texts, insert_ignore, put_texts, sha256_bytes, sha256_text
from capstore.store.schema import Dataset, Image, ImageFile, Item, Reference, Split, Text


def _count(store, model) -> int:  # type: ignore[no-untyped-def]
    with store.read() as s:
        return int(s.scalar(select(func.count()).select_from(model)) or 0)


def test_text_key_is_sha256_of_utf8() -> None:
    caption = "Ein Hund läuft über die Wiese 🐕"
    assert sha256_text(caption) == hashlib.sha256(caption.encode("utf-8")).hexdigest()
    assert sha256_bytes(b"\x89PNG") == hashlib.sha256(b"\x89PNG").hexdigest()
    assert sha256_text("a dog") != sha256_text("a dog ")  # no normalisation: the exact text is the key


def test_put_texts_stores_each_text_once_and_keeps_order(store) -> None:  # type: ignore[no-untyped-def]
    texts = ["a cat", "a dog", "a cat", "ünïcode", "a dog"]
    with store.write() as s:
        shas = put_texts(s, texts)
    assert shas == [sha256_text(t) for t in texts]
    assert _count(store, Text) == 3
    with store.write() as s:  # a second call (another run, another dataset) adds nothing
        assert put_texts(s, ["a dog", "a bird"]) == [sha256_text("a dog"), sha256_text("a bird")]
    assert _count(store, Text) == 4
    with store.read() as s:
        found = get_texts(s, [sha256_text("ünïcode"), "0" * 64])
    assert found == {sha256_text("ünïcode"): "ünïcode"}


def test_bulk_insert_ignore_spans_parameter_chunks(store) -> None:  # type: ignore[no-untyped-def]
    n = _MAX_PARAMS  # 2 columns a row: twice the statement's parameter budget, so several chunks
    texts = [f"pool line {i}" for i in range(n)]
    with store.write() as s:
        put_texts(s, texts[: n // 2])
    with store.write() as s:
        put_texts(s, texts)  # half already there: ignored, not an error
    assert _count(store, Text) == n
    with store.read() as s:
        assert len(get_texts(s, [sha256_text(t) for t in texts])) == n


def test_same_bytes_under_two_paths_are_one_image(store, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from PIL import Image as PILImage

    folder = tmp_path / "pics"
    (folder / "sub").mkdir(parents=True)
    PILImage.new("RGB", (5, 7), (9, 9, 9)).save(folder / "a.png")
    (folder / "sub" / "copy-of-a.png").write_bytes((folder / "a.png").read_bytes())
    PILImage.new("RGB", (5, 7), (200, 9, 9)).save(folder / "b.png")
    summary = add_images(store, "pics", folder)
    assert (summary.items_new, summary.images_new) == (3, 2)
    assert _count(store, Image) == 2 and _count(store, ImageFile) == 3  # two places, one image
    with store.read() as s:
        row = s.get(Image, sha256_bytes((folder / "b.png").read_bytes()))
    assert row is not None and (row.width, row.height, row.format, row.original_name) == (5, 7, "PNG", "b.png")


@pytest.mark.parametrize("model, row", [
    (Dataset, {"name": "twice"}),
    (Text, {"sha256": sha256_text("x"), "text": "x"}),
    (Image, {"sha256": "f" * 64, "size_bytes": 1}),
])
def test_duplicate_keys_are_refused_by_the_database(store, model, row) -> None:  # type: ignore[no-untyped-def]
    with store.write() as s:
        s.execute(insert(model), [row])
    with pytest.raises(IntegrityError, match="(?i)unique"), store.write() as s:
        s.execute(insert(model), [row])
    with store.write() as s:  # the content-addressed writers' way: ignored
        insert_ignore(s, model, [row])
    assert _count(store, model) == 1


def test_items_and_references_are_unique_per_split_and_ordinal(store) -> None:  # type: ignore[no-untyped-def]
    with store.write() as s:
        ds = Dataset(name="d")
        s.add(ds)
        s.flush()
        split = Split(dataset_id=ds.id, name="test")
        s.add(split)
        s.flush()
        item = Item(split_id=split.id, external_id="42")
        s.add(item)
        s.flush()
        put_texts(s, ["ref"])
        s.add(Reference(item_id=item.id, ordinal=0, text_sha=sha256_text("ref")))
        split_id, item_id = split.id, item.id
    for dup in (Item(split_id=split_id, external_id="42"), Reference(item_id=item_id, ordinal=0, text_sha=sha256_text("ref"))):
        with pytest.raises(IntegrityError, match="(?i)unique"), store.write() as s:
            s.add(dup)
    with pytest.raises(IntegrityError, match="(?i)foreign key"), store.write() as s:  # enforced on SQLite too
        s.add(Reference(item_id=item_id, ordinal=1, text_sha="0" * 64))
    assert _count(store, Item) == 1 and _count(store, Reference) == 1


def test_store_write_benchmark_paths_agree(store, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """benchmarks/store_write.py at toy size: every write path reads back, the resume queries agree."""
    import argparse
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "store_write.py"
    spec = importlib.util.spec_from_file_location("store_write", path)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "store_write", bench)  # dataclasses look their module up there
    spec.loader.exec_module(bench)
    args = argparse.Namespace(items=12, iterations=3, candidates=6, step_items=2, batch_items=4, batch=3, interrupted=4)
    out = bench.bench(store, args)
    assert out["resume"]["unfinished_items"] == 4
    assert out["per_batch"]["rows"] == 4 * 3 * 6  # whole items, two commit_steps batches
    written = out["per_step"]["rows"] + out["per_batch"]["rows"] + out["bulk_core"]["rows"] + out["bulk_capstore"]["rows"]
    assert out["candidates_stored"] == written and 6 * 3 * 8 <= written < 6 * 3 * 12


# What an array literal must quote or escape: quotes, backslashes, braces, commas, blanks, NULL, empty.
ODD_TEXTS = ["zéro \u00a0 ☃", "", 'say "hi"', "back\\slash \\\"", "{a,b}", "NULL", " lead, trail ", "two\nlines\t\r"]


def test_insert_ignore_round_trips_every_value_and_fills_defaults(store) -> None:  # type: ignore[no-untyped-def]
    """PostgreSQL inserts plain-typed rows as unnest arrays: NULLs, bytes with NUL, unicode and
    every bit of a double come back as given; a table whose client-side default must be filled
    (a dataset's created_at) still gets it, and a column whose type converts values (an embedding's
    bytes) goes the driver's way."""
    from sqlalchemy import Column, Float, MetaData, String, Table, event

    from capstore.store.schema import EmbeddingCache, Model

    doubles = Table("doubles", MetaData(), Column("key", String(64), primary_key=True), Column("value", Float))
    doubles.create(store.engine)
    statements: list[str] = []
    event.listen(store.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    with store.write() as s:
        s.add(Model(fingerprint="m" * 64, kind="scorer", backend="test", name="m"))
        s.flush()
        model_id = s.scalar(select(Model.id))
        insert_ignore(s, doubles, [{"key": "a" * 64, "value": 0.1 + 0.2}])
        insert_ignore(s, EmbeddingCache, [{"model_id": model_id, "content_kind": "text", "content_sha": "c" * 64,
                                           "dim": 2, "vector": b"\x00\x01\xff\x00"}])
        put_texts(s, ODD_TEXTS)
        insert_ignore(s, Dataset, [{"name": "defaults"}])
    with store.read() as s:
        assert s.scalar(select(doubles.c.value)) == 0.1 + 0.2  # 0.30000000000000004, to the bit
        assert s.scalar(select(EmbeddingCache.vector)) == b"\x00\x01\xff\x00"
        assert get_texts(s, [sha256_text(t) for t in ODD_TEXTS]) == {sha256_text(t): t for t in ODD_TEXTS}
        assert s.scalar(select(Dataset.created_at).where(Dataset.name == "defaults")) is not None
    unnest = [sql for sql in statements if "unnest(" in sql]
    if store.dialect == "postgresql":
        assert {sql.split('"')[1] for sql in unnest} == {"doubles", "texts"}  # texts: the engine's hot write
    else:
        assert not unnest
