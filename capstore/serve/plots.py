"""Which plots a page shows, from the data its queries returned (drawn by ``svg``)."""

from __future__ import annotations

from markupsafe import Markup

from capstore.serve.pages import RunPage, Trajectory
from capstore.serve.svg import Point, Series, line_chart, scatter_chart


def run_plots(page: RunPage) -> dict[str, Markup]:
    """The MILS iteration curves (the scorer's mean best score; the best-so-far caption's metric) and
    quality against cost for every run, this one highlighted."""
    plots: dict[str, Markup] = {}
    if page.curve:
        plots["score"] = line_chart(
            [Series("mean best score", [(r["iteration"], r["mean_best_score"]) for r in page.curve])],
            "Scorer's best score per iteration", "iteration", "mean best score")
        with_metric = [r for r in page.curve if r.get("mean_metric") is not None]
        if with_metric:
            metric = with_metric[0]["metric"]
            plots["metric"] = line_chart(
                [Series(f"best-so-far {metric}", [(r["iteration"], r["mean_metric"]) for r in with_metric])],
                f"{metric} of the best-so-far caption", "iteration", metric)
    plots["quality"] = quality_plot(page.quality_vs_cost, page.run["run_id"])
    return {k: v for k, v in plots.items() if v}


def quality_plot(rows: list[dict], highlight: int | None = None) -> Markup:
    """``quality_vs_cost.sql``'s rows: the metric against dollars (device-hours when every run cost $0),
    on a log axis, each point linking to its run."""
    points = [row for row in rows if row.get("value") is not None]
    if not points:
        return Markup("")
    paid = any((r.get("usd") or 0) > 0 for r in points)
    key, label = ("usd", "dollars (log)") if paid else ("device_hours", "device-hours (log)")
    return scatter_chart(
        [Point(str(r["run"]), float(r[key] or 0), float(r["value"]), r["run_id"] == highlight,
               f"/runs/{r['run_id']}") for r in points],
        f"{points[0]['metric']} vs cost, every run", label, points[0]["metric"], log_x=True)


def item_plot(trajectory: Trajectory | None) -> Markup:
    """Best and mean kept score per iteration of one item's MILS run."""
    if trajectory is None or not trajectory.steps:
        return Markup("")
    steps = trajectory.steps
    return line_chart([Series("best", [(s.iteration, s.best_score) for s in steps if s.best_score is not None]),
                       Series("mean kept", [(s.iteration, s.mean_kept_score) for s in steps
                                            if s.mean_kept_score is not None], dashed=True)],
                      "Scorer's score per iteration", "iteration", "score", width=360, height=220)
