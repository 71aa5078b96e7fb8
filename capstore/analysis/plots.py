"""The report's PNG plots, drawn with matplotlib's object API (Agg canvas, no pyplot, no display).

Each function takes plain data and a path, draws one figure and returns the path; deciding what
to plot and what to skip is the report's job.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

DPI = 120


def _figure(width: float = 6.4, height: float = 4.4):  # -> matplotlib.figure.Figure
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def quality_vs_cost(points: Sequence[tuple[str, float, float]], xlabel: str, ylabel: str, path: Path) -> Path:
    """One labelled point per run: cost on a log x axis, quality on y."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    fig = _figure()
    ax = fig.add_subplot()
    for label, x, y in points:
        ax.scatter([x], [y], s=40)
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.set_xscale("log")
    xs = [x for _, x, _ in points]
    ax.set_xlim(min(xs) / 3, max(xs) * 3)  # at least one decade, so the log axis has a labelled tick
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(f"{ylabel} vs {xlabel}")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    return path


def iteration_curves(panels: Sequence[tuple[str, dict[str, list[tuple[int, float]]]]], path: Path) -> Path:
    """Side-by-side panels (y label, {run label: [(iteration, value)]}), one line per run."""
    from matplotlib.ticker import MaxNLocator

    fig = _figure(width=5.2 * len(panels))
    for i, (ylabel, series) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        for label, values in series.items():
            xs, ys = zip(*values) if values else ((), ())
            ax.plot(xs, ys, marker="o", label=label)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("MILS iteration")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    return path


def score_vs_metric(series: dict[str, tuple[list[float], list[float]]], xlabel: str, ylabel: str,
                    path: Path) -> Path:
    """Candidates as points: scorer score on x, a reference metric on y, one colour per run."""
    fig = _figure()
    ax = fig.add_subplot()
    for label, (xs, ys) in series.items():
        ax.scatter(xs, ys, s=8, alpha=0.5, label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(f"candidates: {ylabel} vs {xlabel}")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, markerscale=2)
    fig.tight_layout()
    fig.savefig(path)
    return path
