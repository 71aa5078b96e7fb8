"""``capstore report``: a Markdown report of runs (``report.md``) with the side-by-side table and plots.

Everything in it comes from the ``sql/`` queries over the friendly views, so each table can be
reproduced with the ``capstore sql -f …`` line printed under it. Plots (PNG, matplotlib Agg):
quality vs cost (log dollars; device-hours when every run cost $0 at the stored prices), the
scorer's best score and a metric per MILS iteration, and scorer score vs a reference metric of
candidates. A plot without data is skipped with a note saying why, never an error.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

from capstore.analysis import plots
from capstore.analysis.output import make_dir
from capstore.analysis.queries import load_query, require_runs, run_query
from capstore.store.engine import Store

METRIC_PREFERENCE = ("CIDEr", "Bleu_4", "METEOR", "ROUGE_L", "SPICE", "CLIPScore", "RefCLIPScore")
MAX_POINTS = 20_000  # candidates drawn in the scatter plot (a deterministic sample beyond that)
SIDE_BY_SIDE = {"run": "run", "method": "method", "captions": "captions", "bleu_4": "BLEU-4", "meteor": "METEOR",
                "rouge_l": "ROUGE-L", "cider": "CIDEr", "spice": "SPICE", "clipscore": "CLIPScore",
                "dollars": "dollars", "hours": "device-hours"}


def write_report(store: Store, run_ids: Sequence[int], out_dir: str | Path) -> Path:
    """Write ``out_dir/report.md`` (and its PNG plots) for ``run_ids``; returns the report's path."""
    from capstore.analysis.duckdb_store import connect

    out = Path(out_dir)
    con = connect(store)
    try:
        q = _Queries(store, con, require_runs(con, run_ids))
        make_dir(out)
        sections = [_header(q), _side_by_side(q), _costs(q), "## Plots", _quality_plot(out, q),
                    _iteration_plot(out, q), _candidate_plot(out, q)]
    finally:
        con.close()
    path = out / "report.md"
    path.write_text("\n\n".join(sections) + "\n", encoding="utf-8")
    return path


@dataclass
class _Queries:
    """The report's queries on one connection, each limited to the report's runs (``$runs``)."""

    store: Store
    con: Any
    runs: list[int]

    def shipped(self, name: str, **params: Any) -> tuple[list[str], list[tuple[Any, ...]]]:
        return self.sql(load_query(name).text, **params)

    def sql(self, text: str, **params: Any) -> tuple[list[str], list[tuple[Any, ...]]]:
        return run_query(self.store, text, {"runs": self.runs, **params}, con=self.con)

    def reproduce(self, name: str) -> str:
        return f"`capstore sql -f {name} --param runs={','.join(map(str, self.runs))}`"


def _header(q: _Queries) -> str:
    cols, rows = q.sql("SELECT run_id, run_name, method, dataset || '/' || split AS split, status, "
                       "items_done || '/' || items AS done, captions, iterations, wall_hours "
                       "FROM runs WHERE list_contains($runs, run_id) ORDER BY run_id")
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return "\n\n".join([f"# capstore report: runs {_ids(q.runs)}",
                        f"Store `{q.store.display_url}`, written {now}.",
                        "## Runs", markdown_table(cols, rows)])


def _side_by_side(q: _Queries) -> str:
    cols, rows = q.shipped("metrics_by_run")
    keep = [cols.index(c) for c in SIDE_BY_SIDE]
    table = markdown_table([SIDE_BY_SIDE[cols[i]] for i in keep], [[row[i] for i in keep] for row in rows])
    return "\n\n".join(["## Metrics and cost", "Corpus metrics; dollars = usage × the price table; "
                        "device-hours of every device (– : not computed).", table, q.reproduce("metrics_by_run")])


def _costs(q: _Queries) -> str:
    cols, rows = q.shipped("cost_by_run")
    return "\n\n".join(["## Cost", markdown_table(cols, rows), q.reproduce("cost_by_run")])


def _quality_plot(out: Path, q: _Queries) -> str:
    path, title = out / "quality_vs_cost.png", "### Quality vs cost"
    metric = _pick_metric(q, "corpus")
    if metric is None:
        return _skip(path, title, "no corpus metric values for these runs (run `capstore eval` first)")
    cols, rows = q.shipped("quality_vs_cost", metric=metric)
    runs = [dict(zip(cols, r)) for r in rows]
    for axis, column in (("dollars", "usd"), ("device-hours", "device_hours")):
        points = [(str(r["run"]), float(r[column]), float(r["value"])) for r in runs if r[column] and r[column] > 0]
        if points:
            break
    if not points:
        return _skip(path, title, f"no run has a cost above zero (dollars or device-hours) with {metric}")
    left_out = sorted({str(r["run"]) for r in runs} - {p[0] for p in points})
    notes = [f"x: {axis} (log scale), y: corpus {metric}."]
    if axis != "dollars":
        notes.append("Every run cost $0 at the stored prices (CPU time is not billed), so device-hours are shown.")
    if left_out:
        notes.append(f"Not plotted ({axis} = 0): {', '.join(left_out)}.")
    plots.quality_vs_cost(points, axis, metric, path)
    return "\n\n".join([title, f"![quality vs cost]({path.name})", " ".join(notes)])


def _iteration_plot(out: Path, q: _Queries) -> str:
    path, title = out / "iteration_curve.png", "### Metric per MILS iteration"
    metric = _pick_metric(q, "candidate") or "CIDEr"
    cols, rows = q.shipped("iteration_curve", metric=metric)
    _, mils = q.sql("SELECT run_id, run_name FROM runs WHERE method = 'mils' AND list_contains($runs, run_id)")
    names = dict(mils)
    rows = [r for r in rows if r[0] in names]
    if not rows:
        return _skip(path, title, "no MILS iteration states in these runs")
    col = {c: i for i, c in enumerate(cols)}
    panels: list[tuple[str, dict[str, list[tuple[int, float]]]]] = [("mean best scorer score", _series(
        rows, names, col["iteration"], col["mean_best_score"]))]
    metric_series = _series(rows, names, col["iteration"], col["mean_metric"])
    note = f"Right: mean candidate-scope {metric} of each item's best-so-far caption."
    if any(metric_series.values()):
        panels.append((f"{metric} of best-so-far caption", metric_series))
    else:
        note = f"No candidate-scope {metric} values: only the scorer's score is drawn (`capstore eval` with candidates adds it)."
    plots.iteration_curves(panels, path)
    return "\n\n".join([title, f"![metric per iteration]({path.name})", note, q.reproduce("iteration_curve")])


def _candidate_plot(out: Path, q: _Queries) -> str:
    path, title = out / "candidates_score_vs_metric.png", "### Scorer score vs metric of candidates"
    metric = _pick_metric(q, "candidate")
    if metric is None:
        return _skip(path, title, "no candidate-scope metric values for these runs (`capstore eval` with candidates)")
    _, rows = q.sql(
        "SELECT r.run_name, c.score, m.value FROM candidates c JOIN metrics m ON m.candidate_id = c.candidate_id "
        "JOIN runs r ON r.run_id = c.run_id WHERE m.scope = 'candidate' AND m.metric = $metric "
        "AND c.score IS NOT NULL AND list_contains($runs, c.run_id) ORDER BY hash(c.candidate_id) LIMIT $n",
        metric=metric, n=MAX_POINTS)
    if not rows:
        return _skip(path, title, f"no scored candidates with a {metric} value")
    series: dict[str, tuple[list[float], list[float]]] = {}
    for name, score, value in rows:
        xs, ys = series.setdefault(str(name), ([], []))
        xs.append(float(score))
        ys.append(float(value))
    plots.score_vs_metric(series, "scorer score (CLIP)", metric, path)
    return "\n\n".join([title, f"![scorer score vs {metric}]({path.name})",
                        f"{len(rows)} candidates{' (a sample)' if len(rows) == MAX_POINTS else ''}."])


def _pick_metric(q: _Queries, scope: str) -> str | None:
    """The first metric of METRIC_PREFERENCE (else any) with values of ``scope`` for these runs."""
    _, rows = q.sql("SELECT DISTINCT metric FROM metrics WHERE scope = $scope AND list_contains($runs, run_id)",
                    scope=scope)
    found = {r[0] for r in rows}
    return next((m for m in METRIC_PREFERENCE if m in found), min(found) if found else None)


def _series(rows: list[tuple[Any, ...]], names: dict[int, str], x: int, y: int) -> dict[str, list[tuple[int, float]]]:
    series: dict[str, list[tuple[int, float]]] = {}
    for row in rows:
        values = series.setdefault(names[row[0]], [])
        if row[y] is not None:
            values.append((int(row[x]), float(row[y])))
    return series


def _skip(path: Path, title: str, reason: str) -> str:
    path.unlink(missing_ok=True)  # a plot left by an earlier report would no longer be true
    return f"{title}\n\n_Skipped: {reason}._"


def _ids(runs: list[int]) -> str:
    return ", ".join(map(str, runs))


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub Markdown table; numbers to 4 significant digits, NULL as –."""
    if not rows:
        return "_(no rows)_"
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(_md_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _md_cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|").replace("\n", " ")
