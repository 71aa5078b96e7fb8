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
from capstore.store.schema import (Candidate, CandidateEval, CandidateEvalValue, Caption, Dataset, IterationState,
                                   MetricValue, Reference)

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


@pytest.mark.parametrize("frozen", ["0002.db", "0003.db", "0004.db"])
def test_store_keeps_candidates_and_their_metric_values_through_the_table_copies(frozen: str, tmp_path: Path) -> None:
    """0003 rebuilds ``candidates`` and 0004 ``runs`` on SQLite: rows, ids and the rows referencing them survive."""
    path = tmp_path / frozen
    shutil.copy(ASSETS / frozen, path)
    store = open_store(str(path))
    assert current_revision(store) == head_revision()
    assert "origin IN" not in _candidates_ddl(store) and "origin = 'seed'" in _candidates_ddl(store)
    with store.read() as s:
        cands = s.execute(select(Candidate.id, Candidate.origin, Candidate.rank).order_by(Candidate.id)).all()
        assert [tuple(c) for c in cands] == [(1, "pool", 1), (2, "generated", 2)]
        # The candidate-scope BLEU-4 moved to the typed table (0006).
        assert s.scalars(select(MetricValue.candidate_id).where(MetricValue.scope == "candidate")).all() == []
        assert s.execute(select(CandidateEvalValue.candidate_id, CandidateEvalValue.bleu_4)).all() == [(1, 0.5)]
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


def test_0004_holds_a_64_bit_seed_on_both_engines(db_url: str) -> None:
    """A seed beyond 31 bits (allowed by ``capstore run --seed``) is stored and read back on both engines."""
    from capstore.store.schema import Item, Run, Split

    store = open_store(db_url, upgrade=False)
    upgrade(store, "0003")
    upgrade(store)
    with store.write() as s:
        ds = Dataset(name="seeds")
        s.add(ds)
        s.flush()
        split = Split(dataset_id=ds.id, name="test")
        s.add(split)
        s.flush()
        s.add(Item(split_id=split.id, external_id="1"))
        s.add(Run(method="fake", config={}, config_hash="0" * 64, split_id=split.id, seed=2**63 - 1))
    with store.read() as s:
        assert s.scalar(select(Run.seed)) == 2**63 - 1
    if store.dialect == "postgresql":
        with store.write() as s:
            s.execute(Run.__table__.delete())
        command.downgrade(alembic_config(store), "0003")
        assert current_revision(store) == "0003"
    store.dispose()


def test_0005_keeps_media_and_adds_kinds_sizes_and_attributes_on_both_engines(db_url: str) -> None:
    """0005 rebuilds ``images`` on SQLite: an image with its file, blob and item survives, becomes kind
    ``image``; videos pass 2 GiB, a kind outside image/video/audio is refused, attributes are JSON."""
    from sqlalchemy import text

    from capstore.store.schema import Image, Item, Reference

    store = open_store(db_url, upgrade=False)
    upgrade(store, "0004")
    sha = "ab" * 32
    with store.engine.begin() as conn:
        conn.execute(text("INSERT INTO datasets (id, name, created_at) VALUES (1, 'old', '2026-01-01')"))
        conn.execute(text("INSERT INTO splits (id, dataset_id, name, created_at) VALUES (1, 1, 'test', '2026-01-01')"))
        conn.execute(text("INSERT INTO images (sha256, size_bytes, width, height, format, original_name, created_at) "
                          "VALUES (:sha, 123, 4, 3, 'PNG', 'a.png', '2026-01-01')"), {"sha": sha})
        conn.execute(text("INSERT INTO image_files (id, image_sha, path) VALUES (1, :sha, '/data/a.png')"), {"sha": sha})
        conn.execute(text("INSERT INTO image_blobs (image_sha, data) VALUES (:sha, :data)"), {"sha": sha, "data": b"png"})
        conn.execute(text("INSERT INTO items (id, split_id, external_id, image_sha) VALUES (1, 1, '1', :sha)"), {"sha": sha})
        conn.execute(text("INSERT INTO texts (sha256, text) VALUES (:sha, 'a reference')"), {"sha": "cd" * 32})
        conn.execute(text('INSERT INTO "references" (id, item_id, ordinal, text_sha) VALUES (1, 1, 0, :sha)'),
                     {"sha": "cd" * 32})
    upgrade(store)
    assert current_revision(store) == head_revision()
    with store.read() as s:
        image = s.get(Image, sha)
        assert (image.kind, image.size_bytes, image.duration_seconds, image.original_name) == ("image", 123, None, "a.png")
        assert s.scalar(select(Item.image_sha)) == sha and s.scalar(select(Item.attributes)) is None
        assert s.scalar(select(Reference.attributes)) is None
    with store.write() as s:
        s.add(Image(sha256="ef" * 32, size_bytes=3 * 2**30, kind="video", duration_seconds=12.5))
        s.get(Item, 1).attributes = {"domain": "near-domain"}
        s.get(Reference, 1).attributes = {"is_precanned": True}
    with store.read() as s:
        assert s.get(Image, "ef" * 32).size_bytes == 3 * 2**30
        assert s.scalar(select(Item.attributes)) == {"domain": "near-domain"}
        assert s.scalar(select(Reference.attributes)) == {"is_precanned": True}
    with pytest.raises(IntegrityError, match="ck_images_kind|CHECK"):
        with store.write() as s:
            s.add(Image(sha256="01" * 32, size_bytes=1, kind="film"))
    with store.write() as s:  # a video beyond 2 GiB cannot go back to a 32-bit column
        s.execute(Image.__table__.delete().where(Image.sha256 == "ef" * 32))
    command.downgrade(alembic_config(store), "0004")
    assert current_revision(store) == "0004"
    with store.engine.connect() as conn:
        assert conn.execute(text("SELECT original_name FROM images")).scalar() == "a.png"
        assert conn.execute(text("SELECT count(*) FROM image_blobs")).scalar() == 1
    store.dispose()


def test_0006_moves_candidate_bleu_and_cider_to_typed_columns_and_back(tmp_path: Path) -> None:
    """The frozen 0005 store's candidate values (BLEU-4 of one candidate, CIDEr of both under two
    implementations) come out of ``metric_values`` into evaluations, bit for bit; corpus and item rows
    stay; a downgrade puts them back as they were."""
    path = tmp_path / "0005.db"
    shutil.copy(ASSETS / "0005.db", path)
    store = open_store(str(path), upgrade=False)
    before = _metric_rows(store)
    assert [r for r in before if r[1] == "candidate"] and [r for r in before if r[1] == "item"]
    upgrade(store)
    with store.read() as s:
        evals = s.execute(select(CandidateEval.id, CandidateEval.run_id, CandidateEval.bleu_4_implementation,
                                 CandidateEval.cider_implementation).order_by(CandidateEval.id)).all()
        values = s.execute(select(CandidateEvalValue.eval_id, CandidateEvalValue.candidate_id,
                                  CandidateEvalValue.bleu_4, CandidateEvalValue.cider)
                           .order_by(CandidateEvalValue.eval_id, CandidateEvalValue.candidate_id)).all()
        left = s.execute(select(MetricValue.scope, MetricValue.metric)).all()
    # Newest implementation first: CIDEr "frozen-2" pairs with the only BLEU-4 implementation.
    assert [tuple(e) for e in evals] == [(1, 1, "frozen", "frozen-2"), (2, 1, None, "frozen")]
    assert [tuple(v) for v in values] == [(1, 1, 0.5, 2.0 / 3.0), (1, 2, None, 0.2),
                                          (2, 1, None, 1.0 / 3.0), (2, 2, None, 0.1)]
    assert sorted(map(tuple, left)) == [("corpus", "CIDEr"), ("item", "CIDEr")]
    command.downgrade(alembic_config(store), "0005")
    assert current_revision(store) == "0005"
    # Ids aside, and the item: values written without one get their candidate's back.
    assert _without_item(_metric_rows(store)) == _without_item(before)
    store.dispose()


def _metric_rows(store) -> list[tuple]:  # type: ignore[no-untyped-def,type-arg]
    from sqlalchemy import text

    with store.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(
            "SELECT metric, scope, subject, item_id, candidate_id, value, implementation, id FROM metric_values"))]


def _without_item(rows: list[tuple]) -> list[tuple]:  # type: ignore[type-arg]
    return sorted(((r[0], r[1], r[2], r[4], r[5], r[6]) for r in rows), key=repr)


def test_0006_on_postgresql_moves_values_exactly(pg_url: str) -> None:
    """On PostgreSQL too: rows written at 0005 move into evaluations with every bit, and back."""
    from sqlalchemy import text

    store = open_store(pg_url, upgrade=False)
    upgrade(store, "0005")
    values = [1.0 / 3.0, 2.0 ** -40, 0.1 + 0.2]
    with store.engine.begin() as conn:
        conn.execute(text("INSERT INTO datasets (id, name, created_at) VALUES (1, 'pg', now())"))
        conn.execute(text("INSERT INTO splits (id, dataset_id, name, created_at) VALUES (1, 1, 'test', now())"))
        conn.execute(text("INSERT INTO items (id, split_id, external_id) VALUES (1, 1, '1')"))
        conn.execute(text("INSERT INTO texts (sha256, text) VALUES (:sha, 'a candidate')"), {"sha": "ab" * 32})
        conn.execute(text("INSERT INTO runs (id, method, config, config_hash, split_id, status, seed, created_at) "
                          "VALUES (1, 'mils', '{}', :h, 1, 'done', 0, now())"), {"h": "0" * 64})
        for k, v in enumerate(values, start=1):
            conn.execute(text("INSERT INTO candidates (id, run_id, item_id, iteration, text_sha, origin) "
                              "VALUES (:k, 1, 1, :k, :sha, 'generated')"), {"k": k, "sha": "ab" * 32})
            for metric, scale in (("Bleu_4", 1.0), ("CIDEr", 3.0)):
                conn.execute(text(
                    "INSERT INTO metric_values (run_id, metric, scope, subject, item_id, candidate_id, value, "
                    "implementation, created_at) VALUES (1, :m, 'candidate', :subj, 1, :k, :v, :impl, now())"),
                    {"m": metric, "subj": f"candidate:{k}", "k": k, "v": v * scale, "impl": f"{metric}-impl"})
    before = _metric_rows(store)
    upgrade(store)
    with store.read() as s:
        assert s.execute(select(CandidateEval.bleu_4_implementation, CandidateEval.cider_implementation)).all() == [
            ("Bleu_4-impl", "CIDEr-impl")]
        got = s.execute(select(CandidateEvalValue.candidate_id, CandidateEvalValue.bleu_4, CandidateEvalValue.cider)
                        .order_by(CandidateEvalValue.candidate_id)).all()
        assert s.scalar(select(func.count()).select_from(MetricValue)) == 0
    assert [tuple(r) for r in got] == [(k, v, v * 3.0) for k, v in enumerate(values, start=1)]
    command.downgrade(alembic_config(store), "0005")
    assert _without_item(_metric_rows(store)) == _without_item(before)
    store.dispose()


def test_0007_keeps_every_score_and_makes_the_table_without_rowid(tmp_path: Path) -> None:
    """SQLite's score_cache becomes one b-tree by its key (WITHOUT ROWID) with the same rows, bit for
    bit; a downgrade gives the rowid table back with them."""
    from sqlalchemy import text

    store = open_store(str(tmp_path / "store.db"), upgrade=False)
    command.upgrade(alembic_config(store), "0006")
    rows = [(1, "a" * 64, "b" * 64, 1.0 / 3.0), (1, "a" * 64, "c" * 64, -0.1), (1, "d" * 64, "b" * 64, 2.0 ** -40)]

    def table() -> tuple[str, list[tuple]]:  # type: ignore[type-arg]
        with store.engine.connect() as conn:
            sql = conn.execute(text("SELECT sql FROM sqlite_master WHERE name = 'score_cache'")).scalar_one()
            return sql, [tuple(r) for r in conn.execute(text("SELECT * FROM score_cache ORDER BY 1, 2, 3"))]

    with store.engine.begin() as conn:
        conn.execute(text("INSERT INTO models (id, fingerprint, kind, backend, name, config, created_at) "
                          "VALUES (1, :fp, 'scorer', 'bench', 'm', '{}', '2026-12-06')"), {"fp": "f" * 64})
        conn.execute(text("INSERT INTO score_cache VALUES (:m, :i, :t, :s)"),
                     [dict(zip("mits", r)) for r in rows])
    assert "WITHOUT ROWID" not in table()[0]
    command.upgrade(alembic_config(store), "0007")
    sql, after = table()
    assert "WITHOUT ROWID" in sql and after == rows
    command.downgrade(alembic_config(store), "0006")
    sql, back = table()
    assert "WITHOUT ROWID" not in sql and back == rows
    store.dispose()


def test_0008_packs_each_mediums_scores_into_one_set_and_back(db_url: str) -> None:
    """score_cache's pairs become one score set a (model, medium), every double to the bit; lookups
    read them; a downgrade unpacks them into the same rows."""
    from sqlalchemy import text

    from capstore.backends.caching import get_scores
    from capstore.store.schema import ScoreSet

    store = open_store(db_url, upgrade=False)
    command.upgrade(alembic_config(store), "0007")
    rows = sorted([(1, "a" * 64, "b" * 64, 1.0 / 3.0), (1, "a" * 64, "c" * 64, -0.1),
                   (1, "d" * 64, "b" * 64, 2.0 ** -40), (2, "a" * 64, "b" * 64, 0.1 + 0.2)])

    def cached() -> list[tuple]:  # type: ignore[type-arg]
        with store.engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text("SELECT * FROM score_cache ORDER BY 1, 2, 3"))]

    with store.engine.begin() as conn:
        for model in (1, 2):
            conn.execute(text("INSERT INTO models (id, fingerprint, kind, backend, name, config, created_at) "
                              "VALUES (:id, :fp, 'scorer', 'bench', 'm', '{}', '2026-12-07')"),
                         {"id": model, "fp": str(model) * 64})
        conn.execute(text("INSERT INTO score_cache VALUES (:m, :i, :t, :s)"), [dict(zip("mits", r)) for r in rows])
    upgrade(store)
    with store.read() as s:
        sets = s.execute(select(ScoreSet.model_id, ScoreSet.image_sha, ScoreSet.size).order_by(
            ScoreSet.model_id, ScoreSet.image_sha)).all()
    assert [tuple(r) for r in sets] == [(1, "a" * 64, 2), (1, "d" * 64, 1), (2, "a" * 64, 1)]
    for model in (1, 2):
        mine = {(i, t): sc for m, i, t, sc in rows if m == model}
        assert get_scores(store, model, [*mine, ("d" * 64, "c" * 64)]) == mine
    command.downgrade(alembic_config(store), "0007")
    assert cached() == rows
    store.dispose()
