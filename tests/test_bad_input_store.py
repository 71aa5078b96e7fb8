"""Bad input through ``capstore dataset``: one line naming the culprit, exit code 2, the store unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import func, select, text

from capstore.cli.main import cli
from capstore.store import open_store
from capstore.store.schema import Base


def _invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def _assert_one_line_error(result: Result, *culprits: str) -> None:
    assert result.exit_code == 2, result.output
    assert result.output.startswith("Error: ") and result.output.count("\n") == 1, result.output
    assert "Traceback" not in result.output
    for culprit in culprits:
        assert culprit in result.output, (culprit, result.output)


def _snapshot(db_url: str) -> dict[str, int]:
    """Row counts of every table: 'store unchanged' means this is equal before and after."""
    store = open_store(db_url)
    with store.read() as s:
        counts = {t.name: int(s.scalar(select(func.count()).select_from(t)) or 0) for t in Base.metadata.sorted_tables}
    store.dispose()
    return counts


@pytest.fixture
def demo_db(db_url: str) -> str:
    """A store (each database) that already holds the demo, so 'unchanged' is checked against real content."""
    assert _invoke("dataset", "demo", "--db", db_url).exit_code == 0
    return db_url


@pytest.fixture
def pictures(tmp_path: Path) -> Path:
    from PIL import Image as PILImage

    folder = tmp_path / "pictures"
    folder.mkdir()
    for i in range(3):
        PILImage.new("RGB", (6, 6), (40 * i, 0, 0)).save(folder / f"p{i}.png")
    return folder


def _coco(tmp_path: Path, names: list[str]) -> Path:
    path = tmp_path / "captions.json"
    path.write_text(json.dumps({
        "images": [{"id": i, "file_name": n} for i, n in enumerate(names)],
        "annotations": [{"id": 10 + i, "image_id": i, "caption": f"caption {i}"} for i in range(len(names))],
    }))
    return path


def test_image_that_is_not_an_image_leaves_store_unchanged(demo_db: str, pictures: Path, tmp_path: Path) -> None:
    (pictures / "p1.png").write_text("<html>not a picture</html>")
    before = _snapshot(demo_db)
    coco = _coco(tmp_path, ["p0.png", "p1.png", "p2.png"])
    _assert_one_line_error(_invoke("dataset", "add", "c", "--coco-captions", str(coco), "--images", str(pictures),
                                   "--db", demo_db), "p1.png", "not a readable image")
    _assert_one_line_error(_invoke("dataset", "add", "f", "--images", str(pictures), "--db", demo_db), "p1.png")
    assert _snapshot(demo_db) == before


def test_missing_image_files_without_flag(demo_db: str, pictures: Path, tmp_path: Path) -> None:
    coco = _coco(tmp_path, ["p0.png", "gone-1.png", "gone-2.png"])
    before = _snapshot(demo_db)
    _assert_one_line_error(_invoke("dataset", "add", "c", "--coco-captions", str(coco), "--images", str(pictures),
                                   "--db", demo_db), "2 of 3 image files are missing", "first: gone-1.png",
                           "--allow-missing-images")
    assert _snapshot(demo_db) == before
    ok = _invoke("dataset", "add", "c", "--coco-captions", str(coco), "--images", str(pictures),
                 "--allow-missing-images", "--db", demo_db)
    assert ok.exit_code == 0 and "2 items without image (first: gone-1.png)" in ok.output


def test_missing_files_and_folders(demo_db: str, pictures: Path, tmp_path: Path) -> None:
    before = _snapshot(demo_db)
    nope = tmp_path / "nope.json"
    _assert_one_line_error(_invoke("dataset", "add", "c", "--coco-captions", str(nope), "--images", str(pictures),
                                   "--db", demo_db), str(nope))
    coco = _coco(tmp_path, ["p0.png"])
    _assert_one_line_error(_invoke("dataset", "add", "c", "--coco-captions", str(coco), "--images",
                                   str(tmp_path / "no-such-dir"), "--db", demo_db), "no-such-dir", "does not exist")
    empty = tmp_path / "empty"
    empty.mkdir()
    _assert_one_line_error(_invoke("dataset", "add", "f", "--images", str(empty), "--db", demo_db),
                           "no image files", str(empty))
    assert _snapshot(demo_db) == before


def test_json_error_position_is_given(demo_db: str, pictures: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": [],\n  "annotations": [,]}')
    _assert_one_line_error(_invoke("dataset", "add", "c", "--coco-captions", str(bad), "--images", str(pictures),
                                   "--db", demo_db), str(bad), "malformed JSON at line 2 column 19")


def test_show_unknown_dataset_lists_the_known_ones(demo_db: str) -> None:
    _assert_one_line_error(_invoke("dataset", "show", "nope", "--db", demo_db), "unknown dataset 'nope'", "known: demo")


def test_unreachable_database_through_dataset_command() -> None:
    url = "postgresql://postgres@127.0.0.1:1/none"
    _assert_one_line_error(_invoke("dataset", "list", "--db", url), "cannot reach store", "127.0.0.1:1")


def test_store_from_a_newer_capstore_through_dataset_command(demo_db: str) -> None:
    store = open_store(demo_db)
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999_from_the_future'"))
    store.dispose()
    _assert_one_line_error(_invoke("dataset", "list", "--db", demo_db), "9999_from_the_future", "newer capstore")
    _assert_one_line_error(_invoke("dataset", "demo", "--name", "again", "--db", demo_db), "newer capstore")
    store = open_store(demo_db, upgrade=False)
    with store.read() as s:
        assert s.scalar(text("SELECT count(*) FROM datasets")) == 1  # nothing written by the refused commands
    store.dispose()
