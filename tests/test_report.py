"""``capstore report`` and ``capstore export``: the Markdown report with its plots, and the Parquet files."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from capstore.analysis.export import export_parquet
from capstore.analysis.report import write_report
from capstore.cli.main import cli
from capstore.errors import InputError
from capstore.store.schema import Candidate, Caption
from tests.test_analysis_fixtures import AnalysisStore, analysis_store  # noqa: F401

PLOTS = ("quality_vs_cost.png", "iteration_curve.png", "candidates_score_vs_metric.png")


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_report_has_the_table_and_three_plots(analysis_store: AnalysisStore, tmp_path: Path) -> None:
    a = analysis_store
    path = write_report(a.store, [a.mils, a.small_pool, a.baseline], tmp_path / "rep")
    text = path.read_text()
    assert path == tmp_path / "rep" / "report.md"
    assert "| run | method | captions | BLEU-4 | METEOR | ROUGE-L | CIDEr | SPICE | CLIPScore | dollars |" in text
    mils_row = next(line for line in text.splitlines() if line.startswith(f"| mils #{a.mils} |"))
    assert "| 0.7770 |" in mils_row  # the newest CIDEr, 4 decimals
    for name in PLOTS:
        assert f"]({name})" in text
        width, height = _png_size(tmp_path / "rep" / name)
        assert width > 300 and height > 300
    assert "_Skipped" not in text
    assert f"Not plotted (dollars = 0): mils #{a.small_pool}." in text  # $0 has no place on a log axis
    assert f"capstore sql -f metrics_by_run --param runs={a.mils},{a.small_pool},{a.baseline}" in text


def test_plots_without_data_are_skipped_with_a_note(analysis_store: AnalysisStore, tmp_path: Path) -> None:
    a = analysis_store
    out = tmp_path / "rep"
    write_report(a.store, [a.mils], out)
    assert all((out / name).exists() for name in PLOTS)
    text = write_report(a.store, [a.baseline], out).read_text()  # no MILS states, no candidate metrics
    assert "_Skipped: no MILS iteration states in these runs._" in text
    assert "_Skipped: no candidate-scope metric values" in text
    assert (out / "quality_vs_cost.png").exists()
    assert not (out / "iteration_curve.png").exists() and not (out / "candidates_score_vs_metric.png").exists()


def test_report_on_runs_without_metrics_or_cost(demo_store, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    db = str(demo_store.url).replace("sqlite:///", "")
    result = CliRunner().invoke(cli, ["run", "--method", "fake", "--captioner", "fake:echo", "--limit", "2",
                                      "--quiet", "--db", db])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(cli, ["report", "1", "--out", str(tmp_path / "r"), "--db", db])
    assert result.exit_code == 0, result.output
    text = (tmp_path / "r" / "report.md").read_text()
    assert "_Skipped: no corpus metric values for these runs" in text
    assert text.count("_Skipped") == 3 and not list((tmp_path / "r").glob("*.png"))
    assert "| fake #1 | fake | 2 | run `capstore eval 1` | – |" in text  # says how to fill the empty row


def test_unknown_run_is_an_error_and_writes_nothing(analysis_store: AnalysisStore, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="unknown run 999"):
        write_report(analysis_store.store, [analysis_store.mils, 999], tmp_path / "rep")
    assert not (tmp_path / "rep").exists()
    result = CliRunner().invoke(cli, ["export", "999", "--parquet", str(tmp_path / "x"), "--db", analysis_store.db])
    assert result.exit_code == 2 and "unknown run 999" in result.output


def test_export_parquet_writes_the_runs_rows(analysis_store: AnalysisStore, tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    a = analysis_store
    result = CliRunner().invoke(cli, ["export", str(a.mils), str(a.baseline), "--parquet", str(tmp_path / "pq"),
                                      "--db", a.db])
    assert result.exit_code == 0, result.output
    files = {Path(line).stem: Path(line) for line in result.output.split()}
    assert {"runs", "candidates", "captions", "metrics", "costs", "usage", "iterations", "items", "refs"} <= set(files)
    tables = {name: pq.read_table(path) for name, path in files.items()}
    assert sorted(tables["runs"].column("run_id").to_pylist()) == sorted([a.mils, a.baseline])
    with a.store.read() as s:
        n_cands = s.scalar(select(func.count()).select_from(Candidate).where(Candidate.run_id.in_([a.mils, a.baseline])))
        items = set(s.scalars(select(Caption.item_id).where(Caption.run_id.in_([a.mils, a.baseline]))))
    assert tables["candidates"].num_rows == n_cands > 0
    assert set(tables["items"].column("item_id").to_pylist()) == items
    assert tables["refs"].num_rows == 5 * len(items)
    assert set(tables["metrics"].column("run_id").to_pylist()) == {a.mils, a.baseline}
    assert export_parquet(a.store, [a.small_pool], tmp_path / "one")[0].name == "runs.parquet"


def test_numbers_are_fixed_point_with_one_format_per_column() -> None:
    """Metrics always to 4 decimals (a BLEU-4 of 5.688e-18 is 0.0000); other number columns in fixed point
    with as many decimals as their smallest value needs, the same for every row."""
    from capstore.analysis.report import markdown_table

    table = markdown_table(["run", "BLEU-4", "CIDEr", "device-hours", "captions"],
                           [["a", 5.688e-18, 1.0, 0.00002, 24], ["b", 0.5, 0.12345, 0.0123, 3]])
    assert "| a | 0.0000 | 1.0000 | 0.000020 | 24 |" in table
    assert "| b | 0.5000 | 0.1235 | 0.012300 | 3 |" in table


def test_report_has_no_scientific_notation(analysis_store: AnalysisStore, tmp_path: Path) -> None:
    import re

    a = analysis_store
    text = write_report(a.store, [a.mils, a.small_pool, a.baseline], tmp_path / "rep", about="About these runs.").read_text()
    assert "About these runs." in text.split("## Runs")[0]
    assert not re.search(r"\d[eE][-+]\d", text)
    assert "## MILS per iteration" in text and "## Early stop" in text  # the small-pool run stops early


def test_point_labels_do_not_overlap() -> None:
    """Runs with nearly the same cost and quality still get readable labels: no two labels (nor a label
    and a point) overlap, and every label stays inside the plot."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from capstore.analysis.plots import place_labels

    fig = Figure(figsize=(6.4, 4.4), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    points = [("demo-mils", 0.0092, 6.47), ("demo-hybrid", 0.0090, 6.41), ("demo-llava", 0.00084, 7.27),
              ("demo-blip2", 0.00086, 7.25), ("a-long-run-name #12", 0.0091, 6.45)]
    for _, x, y in points:
        ax.scatter([x], [y])
    ax.set_xscale("log")
    ax.set_xlim(0.0002, 0.03)
    ax.margins(y=0.2)
    fig.tight_layout()
    boxes = place_labels(ax, points)
    inside = ax.get_window_extent(fig.canvas.get_renderer())
    assert len(boxes) == len(points)
    for i, box in enumerate(boxes):
        assert inside.contains(box.x0, box.y0) and inside.contains(box.x1, box.y1)
        assert not any(box.overlaps(other) for other in boxes[i + 1 :])
