"""``sql/metrics_by_attribute.sql``: the nocaps table from item attributes, with the whole split's CIDEr-D
document frequencies (pycocoevalcap's CiderScorer over all items, then each domain's mean), not per domain."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from capstore.analysis.queries import bind_params, load_query, run_query
from capstore.store import open_store
from tests.bad_input import invoke
from tests.media_files import write_json, write_png

DOMAINS = ["in-domain", "in-domain", "near-domain", "near-domain", "out-domain", "out-domain"]
REFS = [["a dog runs on the grass", "a brown dog on a lawn"], ["a cat sleeps on a sofa", "a cat on a couch"],
        ["a red bus on a street", "a bus parked near a shop"], ["a dog sleeps on a sofa", "a dog on a couch"],
        ["a jellyfish in blue water", "a pale jellyfish swimming"], ["a red bus near a dog", "a dog and a bus"]]
CAPTIONS = ["a dog on the grass", "a cat on a sofa", "a bus on a street", "a dog on a couch",
            "a jellyfish in the water", "a dog near a bus"]


def _cider(items: list[int]) -> list[float]:
    """pycocoevalcap's CIDEr-D of ``items`` with document frequencies from their references only."""
    from pycocoevalcap.cider.cider_scorer import CiderScorer

    scorer = CiderScorer(n=4, sigma=6.0)
    for i in items:
        scorer += (CAPTIONS[i], REFS[i])
    _, scores = scorer.compute_score()
    return [float(s) for s in scores]


@pytest.fixture
def nocaps_run(tmp_path: Path) -> str:
    if shutil.which("java") is None:
        pytest.skip("java is needed for the PTB tokenizer of capstore eval")
    for n in range(6):
        write_png(tmp_path / "media" / f"{n}.jpg", n)
    annotations = [{"id": 10 * n + k, "image_id": n, "caption": r} for n in range(6) for k, r in enumerate(REFS[n])]
    file = write_json(tmp_path / "nocaps_val_4500_captions.json", {
        "images": [{"id": n, "file_name": f"{n}.jpg", "domain": DOMAINS[n]} for n in range(6)],
        "annotations": annotations})
    db = str(tmp_path / "store.db")
    assert invoke(["dataset", "add", "nocaps", "--format", "nocaps", str(file), "--media", str(tmp_path / "media"),
                   "--db", db]).exit_code == 0
    results = tmp_path / "results.json"
    results.write_text(json.dumps([{"image_id": n, "caption": c} for n, c in enumerate(CAPTIONS)]))
    assert invoke(["import-results", str(results), "--dataset", "nocaps", "--label", "model", "--db", db]).exit_code == 0
    evaluated = invoke(["eval", "1", "--no-clipscore", "--quiet", "--db", db])
    assert evaluated.exit_code == 0, evaluated.output
    return db


def test_the_nocaps_table_is_one_query_with_the_whole_splits_document_frequencies(nocaps_run: str) -> None:
    store = open_store(nocaps_run)
    query = load_query("metrics_by_attribute")
    columns, rows = run_query(store, query.text, bind_params(query, {"runs": "1"}))
    table = {row[columns.index("value")]: row for row in rows}
    assert list(table) == ["in-domain", "near-domain", "out-domain", "overall"]
    whole = _cider(list(range(6)))
    for domain, items in (("in-domain", [0, 1]), ("near-domain", [2, 3]), ("out-domain", [4, 5])):
        row = table[domain]
        assert row[columns.index("items")] == 2 and row[columns.index("attribute")] == "domain"
        assert row[columns.index("cider")] == pytest.approx(sum(whole[i] for i in items) / 2, abs=1e-6)
    alone = sum(_cider([4, 5])) / 2  # CIDEr recomputed on the domain alone: another number
    assert abs(alone - table["out-domain"][columns.index("cider")]) > 1e-3
    overall = table["overall"]
    assert overall[columns.index("items")] == 6
    assert overall[columns.index("cider")] == pytest.approx(sum(whole) / 6, abs=1e-6)
    _, corpus = run_query(store, "SELECT value FROM metrics WHERE run_id = 1 AND metric = 'CIDEr' AND scope = 'corpus'")
    assert overall[columns.index("cider")] == pytest.approx(corpus[0][0], abs=1e-9)
    store.dispose()


def test_the_query_runs_through_the_cli_with_another_attribute(nocaps_run: str) -> None:
    result = invoke(["sql", "-f", "metrics_by_attribute", "--param", "attribute=colour", "--format", "csv",
                     "--db", nocaps_run])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert lines[0] == "run_id,run,method,dataset,modality,attribute,value,items,cider,spice"
    assert [line.split(",")[6] for line in lines[1:]] == ["(none)", "overall"]
