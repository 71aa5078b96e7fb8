"""``capstore report``: a Markdown report of runs (``report.md``) with the side-by-side table and plots.

Everything in it comes from the ``sql/`` queries over the friendly views, so each table can be
reproduced with the ``capstore sql -f …`` line printed under it. Plots (PNG, matplotlib Agg):
quality vs cost (log dollars; device-hours when every run cost $0 at the stored prices), the
scorer's best score and a metric per MILS iteration, and scorer score vs a reference metric of
candidates. A plot without data is skipped with a note saying why, never an error.

Numbers: every metric to 4 decimals, every other number column with one fixed-point format of its
own (as many decimals as its smallest value needs), never scientific notation. A run without
metric values says which ``capstore eval`` would give them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
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
METRIC_COLUMNS = ("BLEU-4", "METEOR", "ROUGE-L", "CIDEr", "SPICE", "CLIPScore", "gain")  # and every "mean …"
METRIC_DECIMALS = 4
MAX_DECIMALS = 10  # other columns: enough decimals for two significant digits of their smallest value


def write_report(store: Store, run_ids: Sequence[int], out_dir: str | Path, *, about: str | None = None) -> Path:
    """Write ``out_dir/report.md`` (and its PNG plots) for ``run_ids``; returns the report's path.

    ``about``: a paragraph under the title saying where the runs come from (the demo says which
    models made them and what the numbers are about).
    """
    from capstore.analysis.duckdb_store import connect

    out = Path(out_dir)
    con = connect(store)
    try:
        q = _Queries(store, con, require_runs(con, run_ids))
        make_dir(out)
        sections = [_header(q, about), _side_by_side(q), _iterations(q), _early_stop(q), _costs(q), "## Plots",
                    _quality_plot(out, q), _iteration_plot(out, q), _candidate_plot(out, q)]
    finally:
        con.close()
    path = out / "report.md"
    path.write_text("\n\n".join(section for section in sections if section) + "\n", encoding="utf-8")
    return path


@dataclass
class _MilsCurve:
    """The rows of ``iteration_curve.sql`` for the MILS runs among the report's, by column name."""

    metric: str
    col: dict[str, int]
    rows: list[tuple[Any, ...]]
    names: dict[int, str]


@dataclass
class _Queries:
    """The report's queries on one connection, each limited to the report's runs (``$runs``)."""

    store: Store
    con: Any
    runs: list[int]
    _mils_curve: "_MilsCurve | None" = field(default=None, repr=False)

    def shipped(self, name: str, **params: Any) -> tuple[list[str], list[tuple[Any, ...]]]:
        return self.sql(load_query(name).text, **params)

    def sql(self, text: str, **params: Any) -> tuple[list[str], list[tuple[Any, ...]]]:
        return run_query(self.store, text, {"runs": self.runs, **params}, con=self.con)

    def mils_curve(self) -> "_MilsCurve":
        """``iteration_curve.sql`` for the report's MILS runs, run once for the table and the plot (it is
        the report's slowest query on a full-size run)."""
        if self._mils_curve is None:
            metric = _pick_metric(self, "candidate") or "CIDEr"
            cols, rows = self.shipped("iteration_curve", metric=metric)
            _, mils = self.sql("SELECT run_id, run_name FROM runs WHERE method = 'mils' AND list_contains($runs, run_id)")
            names = dict(mils)
            self._mils_curve = _MilsCurve(metric, {c: i for i, c in enumerate(cols)},
                                          [r for r in rows if r[0] in names], names)
        return self._mils_curve

    def reproduce(self, name: str) -> str:
        return f"`capstore sql -f {name} --param runs={','.join(map(str, self.runs))}`"


def _header(q: _Queries, about: str | None) -> str:
    # The models a run used, by the last part of their spec (a folder's name, a hub name).
    short = "regexp_replace({0}, '^([a-z0-9_]+:).*/', '\\1')"
    models = (f"coalesce({short.format('captioner')}, {short.format('scorer')} || ' + ' || "
              f"{short.format('generator')})")
    cols, rows = q.sql("SELECT run_id, run_name, method, modality, dataset || '/' || split AS split, status, "
                       "items_done || '/' || items AS done, captions, iterations, "
                       f"CASE WHEN method = 'external' THEN NULL ELSE {models} END AS models, wall_hours "
                       "FROM runs WHERE list_contains($runs, run_id) ORDER BY run_id")
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return "\n\n".join([f"# capstore report: runs {_ids(q.runs)}",
                        *([about] if about else []),
                        f"Store `{q.store.display_url}`, written {now}.",
                        "## Runs", markdown_table(cols, rows)])


def _side_by_side(q: _Queries) -> str:
    cols, rows = q.shipped("metrics_by_run")
    keep = [cols.index(c) for c in SIDE_BY_SIDE]
    metric_at = [k for k, i in enumerate(keep) if SIDE_BY_SIDE[cols[i]] in METRIC_COLUMNS]
    table_rows = []
    for row in rows:
        values = [row[i] for i in keep]
        if all(values[k] is None for k in metric_at):  # never evaluated: say how to evaluate it
            values[metric_at[0]] = f"run `capstore eval {row[cols.index('run_id')]}`"
        table_rows.append(values)
    table = markdown_table([SIDE_BY_SIDE[cols[i]] for i in keep], table_rows)
    return "\n\n".join(["## Metrics and cost", "Corpus metrics; dollars = usage × the price table; "
                        "device-hours of every device (– : not computed).", table, q.reproduce("metrics_by_run")])


def _iterations(q: _Queries) -> str:
    """MILS's curve as numbers: mean best score per iteration and the metric of the best-so-far caption."""
    curve = q.mils_curve()
    metric, c, rows, names = curve.metric, curve.col, curve.rows, curve.names
    if not rows:
        return ""
    table = markdown_table(["run", "iteration", "items", "mean best score", "gain", f"mean {metric}"],
                           [[names[r[0]], r[c["iteration"]], r[c["items"]], r[c["mean_best_score"]],
                             r[c["score_gain"]], r[c["mean_metric"]]] for r in rows])
    return "\n\n".join(["## MILS per iteration",
                        f"Mean over the items that reached the iteration of the scorer's best score so far, its gain, "
                        f"and the candidate-scope {metric} of that best-so-far caption (– : not computed; "
                        "`capstore eval RUN --candidates`).",
                        table,
                        q.reproduce("iteration_curve")])


def _early_stop(q: _Queries) -> str:
    cols, rows = q.shipped("early_stop_savings")
    if not rows:
        return ""
    _, names = q.sql("SELECT run_id, run_name FROM runs WHERE list_contains($runs, run_id)")
    name = dict(names)
    c = {col: i for i, col in enumerate(cols)}
    table = markdown_table(["run", "patience", "items", "stopped early", "iterations planned", "done", "saved",
                            "share saved"],
                           [[name.get(r[0], r[0]), r[c["patience"]], r[c["items"]], r[c["items_stopped"]],
                             r[c["iterations_planned"]], r[c["iterations_done"]], r[c["iterations_saved"]],
                             r[c["share_saved"]]] for r in rows])
    return "\n\n".join(["## Early stop", "Iterations that `--early-stop` did not spend.", table,
                        q.reproduce("early_stop_savings")])


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
    curve = q.mils_curve()
    metric, col, rows, names = curve.metric, curve.col, curve.rows, curve.names
    if not rows:
        return _skip(path, title, "no MILS iteration states in these runs")
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
    """A GitHub Markdown table, NULL as –; numbers in fixed point, one format per column (``column_decimals``)."""
    if not rows:
        return "_(no rows)_"
    decimals = [column_decimals(name, [row[k] for row in rows]) for k, name in enumerate(columns)]
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(_md_cell(v, d) for v, d in zip(row, decimals)) + " |" for row in rows]
    return "\n".join(lines)


def column_decimals(name: str, values: Sequence[Any]) -> int:
    """Decimals of a number column: 4 for a metric; otherwise at least 4, more when its smallest
    non-zero value needs them for two significant digits (device-hours of a CPU demo)."""
    if name in METRIC_COLUMNS or name.startswith("mean "):
        return METRIC_DECIMALS
    small = [abs(float(v)) for v in values if isinstance(v, (float, Decimal)) and v and math.isfinite(float(v))]
    if not small:
        return METRIC_DECIMALS
    return max(METRIC_DECIMALS, min(MAX_DECIMALS, 1 - math.floor(math.log10(min(small)))))


def _md_cell(value: Any, decimals: int = METRIC_DECIMALS) -> str:
    if value is None:
        return "–"
    if isinstance(value, (float, Decimal)) and not isinstance(value, bool):
        number = float(value)
        return f"{number:.{decimals}f}" if math.isfinite(number) else str(number)
    return str(value).replace("|", "\\|").replace("\n", " ")
