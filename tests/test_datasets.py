"""Datasets: COCO import, folder import, the demo, dedup, and every bad input (store unchanged)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from capstore.cli.main import cli
from capstore.datasets import add_coco, add_images, find_split, make_demo
from capstore.errors import InputError
from capstore.store.images import decode_image, read_image
from capstore.store.schema import Dataset, Image, Item, Reference, Text
from tests.conftest import need_shared


def _counts(store) -> dict[str, int]:  # type: ignore[no-untyped-def]
    with store.read() as s:
        return {m.__tablename__: s.scalar(select(func.count()).select_from(m)) for m in (Dataset, Item, Reference, Image, Text)}


def _write_png(path: Path, colour: tuple[int, int, int]) -> None:
    from PIL import Image as PILImage

    PILImage.new("RGB", (8, 8), colour).save(path)


@pytest.fixture
def coco_dir(tmp_path: Path) -> Path:
    """A tiny COCO captions file with 3 images, one with duplicate references."""
    d = tmp_path / "coco"
    (d / "images").mkdir(parents=True)
    for i, colour in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255)]):
        _write_png(d / "images" / f"img{i}.png", colour)
    data = {
        "images": [{"id": i, "file_name": f"img{i}.png"} for i in range(3)],
        "annotations": [
            {"id": 1, "image_id": 0, "caption": "a red square"},
            {"id": 2, "image_id": 0, "caption": "a red square"},  # duplicate reference, must be kept
            {"id": 3, "image_id": 1, "caption": "a green square"},
            {"id": 4, "image_id": 2, "caption": "a blue square"},
        ],
    }
    (d / "captions.json").write_text(json.dumps(data))
    return d


def test_coco_import_and_reimport_adds_nothing(store, coco_dir: Path) -> None:  # type: ignore[no-untyped-def]
    first = add_coco(store, "mini", coco_dir / "captions.json", coco_dir / "images")
    assert (first.items_new, first.references_new, first.images_new) == (3, 4, 3)
    before = _counts(store)
    again = add_coco(store, "mini", coco_dir / "captions.json", coco_dir / "images")
    assert again.added_nothing and "nothing added" in again.describe()
    assert _counts(store) == before
    assert before["texts"] == 3  # "a red square" stored once for two references


def test_same_image_in_two_datasets_is_one_row(store, coco_dir: Path) -> None:  # type: ignore[no-untyped-def]
    add_coco(store, "mini", coco_dir / "captions.json", coco_dir / "images")
    summary = add_images(store, "folder", coco_dir / "images")
    assert summary.items_new == 3 and summary.images_new == 0
    assert _counts(store)["images"] == 3 and _counts(store)["datasets"] == 2


def test_demo_is_deterministic_and_readable(store) -> None:  # type: ignore[no-untyped-def]
    first = make_demo(store)
    assert (first.items_new, first.references_new, first.images_new) == (24, 120, 24)
    assert make_demo(store).added_nothing
    with store.read() as s:
        split = find_split(s, "demo")
        sha = s.scalar(select(Item.image_sha).where(Item.split_id == split.id).limit(1))
        img = decode_image(read_image(s, sha))
    assert img.size == (224, 224)


def test_karpathy_test_split_imports(store) -> None:  # type: ignore[no-untyped-def]
    captions = need_shared("data/coco-karpathy-test/captions_karpathy_test.json")
    images = captions.parent / "images"
    with pytest.raises(InputError, match="--allow-missing-images"):
        add_coco(store, "karpathy", captions, images)
    assert _counts(store)["items"] == 0
    summary = add_coco(store, "karpathy", captions, images, allow_missing_images=True)
    assert (summary.items_new, summary.references_new) == (5000, 25010)
    assert summary.images_new == len(list(images.glob("*.jpg")))
    assert add_coco(store, "karpathy", captions, images, allow_missing_images=True).added_nothing


# -- bad input: one line naming the culprit, exit 2, store unchanged --------------------------------

def _bad(tmp_path: Path, coco_dir: Path, content: str) -> Path:
    path = tmp_path / "bad.json"
    path.write_text(content)
    return path


@pytest.mark.parametrize("content, message", [
    ('{"images": [', "malformed JSON at line 1"),
    ('[1, 2]', "not COCO captions"),
    ('{"images": []}', "has no 'annotations'"),
    ('{"images": [{"id": 1}], "annotations": []}', "images[0] has no 'file_name'"),
    ('{"images": [{"id": 0, "file_name": "img0.png"}], "annotations": [{"id": 9, "image_id": 7, "caption": "x"}]}',
     "annotation 9 points at unknown image_id 7"),
])
def test_bad_coco_files(db_url: str, tmp_path: Path, coco_dir: Path, content: str, message: str) -> None:
    runner = CliRunner()
    assert runner.invoke(cli, ["dataset", "demo", "--db", db_url]).exit_code == 0
    bad = _bad(tmp_path, coco_dir, content)
    result = runner.invoke(cli, ["dataset", "add", "x", "--coco-captions", str(bad), "--images", str(coco_dir / "images"), "--db", db_url])
    assert result.exit_code == 2, result.output
    assert message in result.output and str(bad) in result.output
    assert result.output.strip().count("\n") == 0 and "Traceback" not in result.output
    listing = runner.invoke(cli, ["dataset", "list", "--db", db_url]).output
    assert "x\t" not in listing and "demo\ttest\t24 items" in listing


def test_not_an_image_is_rejected_and_nothing_imported(store, coco_dir: Path) -> None:  # type: ignore[no-untyped-def]
    (coco_dir / "images" / "img1.png").write_bytes(b"this is not a png")
    with pytest.raises(InputError, match="img1.png is not a readable image"):
        add_coco(store, "mini", coco_dir / "captions.json", coco_dir / "images")
    assert _counts(store)["items"] == 0 and _counts(store)["images"] == 0


def test_missing_images_need_the_flag(store, coco_dir: Path) -> None:  # type: ignore[no-untyped-def]
    (coco_dir / "images" / "img2.png").unlink()
    with pytest.raises(InputError, match=r"1 of 3 image files are missing .*first: img2.png"):
        add_coco(store, "mini", coco_dir / "captions.json", coco_dir / "images")
    assert _counts(store)["items"] == 0
    summary = add_coco(store, "mini", coco_dir / "captions.json", coco_dir / "images", allow_missing_images=True)
    assert summary.items_new == 3 and summary.missing_images == ["img2.png"]
    with store.read() as s:
        assert s.scalar(select(func.count()).select_from(Item).where(Item.image_sha.is_(None))) == 1


def test_unknown_dataset_is_one_line(db_url: str) -> None:
    assert CliRunner().invoke(cli, ["db", "upgrade", "--db", db_url]).exit_code == 0  # show reads a store that exists
    result = CliRunner().invoke(cli, ["dataset", "show", "nope", "--db", db_url])
    assert result.exit_code == 2 and result.output.startswith("Error: unknown dataset 'nope'")


def test_cli_show_and_list(db_url: str) -> None:
    runner = CliRunner()
    runner.invoke(cli, ["dataset", "demo", "--db", db_url])
    shown = runner.invoke(cli, ["dataset", "show", "demo", "--db", db_url])
    assert shown.exit_code == 0 and "split test: 24 items, 120 references" in shown.output
    again = runner.invoke(cli, ["dataset", "demo", "--db", db_url])
    assert "already imported" in again.output


def test_changed_file_on_disk_is_not_taken_for_the_image(store, coco_dir: Path) -> None:  # type: ignore[no-untyped-def]
    add_coco(store, "mini", coco_dir / "captions.json", coco_dir / "images")
    with store.read() as s:
        sha = s.scalar(select(Item.image_sha).where(Item.external_id == "0"))
    _write_png(coco_dir / "images" / "img0.png", (1, 2, 3))
    with store.read() as s, pytest.raises(InputError, match="not readable with matching bytes"):
        read_image(s, sha)
