"""COCO results files: import as an external run (idempotent, all-or-nothing), export, runs list."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from capstore.cli.main import cli
from capstore.datasets import make_demo
from capstore.errors import InputError
from capstore.results_io import export_results, import_results
from capstore.runs.status import list_runs, run_status
from capstore.store.engine import Store
from capstore.store.schema import Caption, Item, Run, Text, WorkItem


def _results(store: Store, n: int = 5) -> list[dict[str, object]]:
    with store.read() as s:
        ids = s.scalars(select(Item.external_id).order_by(Item.external_id).limit(n)).all()
    return [{"image_id": i, "caption": f"A caption of {i}."} for i in ids]


def _write(tmp_path: Path, content: object, name: str = "results.json") -> Path:
    path = tmp_path / name
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def _counts(store: Store) -> tuple[int, int, int, int]:
    with store.read() as s:
        return tuple(s.scalar(select(func.count()).select_from(t)) for t in (Run, Caption, WorkItem, Text))  # type: ignore[return-value]


def test_import_is_an_external_run_and_idempotent(store: Store, tmp_path: Path) -> None:
    make_demo(store)
    path = _write(tmp_path, _results(store))
    run_id, created = import_results(store, path, "demo", "mine")
    assert created
    with store.read() as s:
        run = s.get(Run, run_id)
        assert (run.method, run.status, run.label) == ("external", "external", "mine")
        assert run.config["file_sha256"] and run.config["file_name"] == "results.json"
        caps = s.execute(select(Item.external_id, Text.text).join(Caption, Caption.item_id == Item.id)
                         .join(Text, Text.sha256 == Caption.text_sha).where(Caption.run_id == run_id)).all()
    assert sorted(caps) == sorted((r["image_id"], r["caption"]) for r in _results(store))
    before = _counts(store)
    assert import_results(store, path, "demo", "mine") == (run_id, False)
    assert _counts(store) == before
    other, created = import_results(store, path, "demo", "another label")
    assert created and other != run_id
    rows = {r[0]: r for r in list_runs(store)}
    assert rows[run_id][1:4] == ("external", "demo/test", "external") and rows[run_id][5:] == (5, 5, "mine")
    assert "5/5 done" in run_status(store, run_id).describe()


@pytest.mark.parametrize("content, message", [
    ('[{"image_id": "demo-00", "caption": "x"', "malformed JSON at line 1"),
    ('{"image_id": "demo-00", "caption": "x"}', "not a COCO results file: expected a JSON list"),
    ("[]", "holds no results"),
    ('[{"image_id": "demo-00"}]', "entry 0 has no 'caption'"),
    ('[{"image_id": "demo-00", "caption": "a"}, 7]', "entry 1 has no 'image_id'"),
    ('[{"image_id": "demo-00", "caption": 3}]', "entry 0 (image_id demo-00) has a caption that is not a string"),
    ('[{"image_id": "demo-00", "caption": "  "}]', "entry 0 (image_id demo-00) has an empty caption"),
    ('[{"image_id": [1], "caption": "a"}]', "entry 0 has image_id [1]"),
    ('[{"image_id": "demo-00", "caption": "a"}, {"image_id": "demo-00", "caption": "b"}]',
     "image_id demo-00 appears twice (entries 0 and 1)"),
    ('[{"image_id": "demo-00", "caption": "a"}, {"image_id": 99, "caption": "b"}, {"image_id": 98, "caption": "c"}]',
     "image_id 99 (entry 1) is not an item of demo/test (and 1 more unknown)"),
])
def test_bad_results_files_store_nothing(store: Store, tmp_path: Path, content: str, message: str) -> None:
    make_demo(store)
    path = _write(tmp_path, content)
    before = _counts(store)
    with pytest.raises(InputError) as info:
        import_results(store, path, "demo", "bad")
    assert message in str(info.value) and "\n" not in str(info.value)
    assert _counts(store) == before


def test_unknown_dataset_split_and_missing_file(store: Store, tmp_path: Path) -> None:
    make_demo(store)
    path = _write(tmp_path, _results(store))
    with pytest.raises(InputError, match="unknown dataset 'nope'"):
        import_results(store, path, "nope", "x")
    with pytest.raises(InputError, match="has no split 'val'"):
        import_results(store, path, "demo", "x", split="val")
    with pytest.raises(InputError, match="cannot read results file"):
        import_results(store, tmp_path / "absent.json", "demo", "x")
    with pytest.raises(InputError, match="--label must not be empty"):
        import_results(store, path, "demo", " ")


def test_export_round_trip(store: Store, tmp_path: Path) -> None:
    make_demo(store)
    results = _results(store, 24)
    run_id, _ = import_results(store, _write(tmp_path, results), "demo", "mine")
    out = tmp_path / "out.json"
    assert export_results(store, run_id, out) == 24
    assert json.loads(out.read_text()) == results  # same order (by item), same string ids
    with pytest.raises(InputError, match="no run 99"):
        export_results(store, 99, out)
    with pytest.raises(InputError, match="folder .* does not exist"):
        export_results(store, run_id, tmp_path / "absent" / "out.json")


def test_numeric_ids_are_exported_as_integers(store: Store, tmp_path: Path) -> None:
    from capstore.datasets.importer import ItemSpec, write_split

    spec = [ItemSpec("42", "a.jpg", tmp_path / "a.jpg"), ItemSpec("7", "b.jpg", tmp_path / "b.jpg"),
            ItemSpec("007", "c.jpg", tmp_path / "c.jpg")]
    for s in spec:
        s.references.append(("a reference", None))
    write_split(store, "numbers", "test", str(tmp_path), spec, allow_missing=True)
    results = [{"image_id": 42, "caption": "forty-two"}, {"image_id": 7, "caption": "seven"},
               {"image_id": "007", "caption": "bond"}]
    run_id, _ = import_results(store, _write(tmp_path, results), "numbers", "n")
    out = tmp_path / "out.json"
    export_results(store, run_id, out)
    assert json.loads(out.read_text()) == [results[2], results[1], results[0]]  # 007, 7, 42


def test_cli_import_and_export(db_url: str, tmp_path: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(cli, ["dataset", "demo", "--db", db_url]).exit_code == 0
    path = _write(tmp_path, [{"image_id": "demo-01", "caption": "Two shapes."}])
    first = runner.invoke(cli, ["import-results", str(path), "--dataset", "demo", "--label", "x", "--db", db_url])
    assert first.exit_code == 0 and first.output == f"run 1: imported {path} as 'x'\n", first.output
    again = runner.invoke(cli, ["import-results", str(path), "--dataset", "demo", "--label", "x", "--db", db_url])
    assert again.exit_code == 0 and "already imported" in again.output and "nothing added" in again.output
    bad = runner.invoke(cli, ["import-results", str(_write(tmp_path, "[1", "bad.json")), "--dataset", "demo",
                              "--label", "x", "--db", db_url])
    assert bad.exit_code == 2 and bad.output.count("\n") == 1 and "bad.json: malformed JSON" in bad.output
    out = tmp_path / "out.json"
    exported = runner.invoke(cli, ["export-results", "1", str(out), "--db", db_url])
    assert exported.exit_code == 0 and "wrote 1 captions" in exported.output
    assert json.loads(out.read_text()) == [{"image_id": "demo-01", "caption": "Two shapes."}]
    listed = runner.invoke(cli, ["runs", "list", "--db", db_url])
    assert "1\texternal\tdemo/test\texternal" in listed.output and "1/1\tx" in listed.output
