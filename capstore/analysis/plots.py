"""The report's PNG plots, drawn with matplotlib's object API (Agg canvas, no pyplot, no display).

Each function takes plain data and a path, draws one figure and returns the path; deciding what
to plot and what to skip is the report's job. Point labels are placed so that they overlap neither
each other nor the points (``place_labels``).
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
    for _, x, y in points:
        ax.scatter([x], [y], s=40)
    ax.set_xscale("log")
    xs = [x for _, x, _ in points]
    ax.set_xlim(min(xs) / 3, max(xs) * 3)  # at least one decade, so the log axis has a labelled tick
    ax.margins(y=0.2)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: _plain(v)))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(f"{ylabel} vs {xlabel}")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()  # before placing labels: the layout fixes where the points are drawn
    place_labels(ax, points)
    fig.savefig(path)
    return path


# Where a label may go, in points from its point: beside it first, then further out (with a leader line).
_OFFSETS = [(dx * r, dy * r) for r in (1, 2, 3, 4, 6) for dx, dy in ((6, 4), (6, -10), (-6, 4), (-6, -10),
                                                                    (0, 10), (0, -16))]


def place_labels(ax, points: Sequence[tuple[str, float, float]]) -> list:  # type: ignore[no-untyped-def]
    """Annotate each (label, x, y) at the first offset where its text overlaps no other label and no
    point and stays inside the axes; returns the labels' boxes (display coordinates)."""
    renderer = ax.figure.canvas.get_renderer()
    inside = ax.get_window_extent(renderer)
    centres = [ax.transData.transform((x, y)) for _, x, y in points]
    pad = 5.0  # pixels around a point's marker
    taken = [_box(cx - pad, cy - pad, cx + pad, cy + pad) for cx, cy in centres]
    boxes = []
    for label, x, y in points:
        text = None
        for dx, dy in _OFFSETS:
            if text is not None:
                text.remove()
            far = abs(dx) > 6 or abs(dy) > 16
            text = ax.annotate(label, (x, y), textcoords="offset points", xytext=(dx, dy), fontsize=8,
                               ha="left" if dx > 0 else "right" if dx < 0 else "center",
                               arrowprops={"arrowstyle": "-", "lw": 0.5, "alpha": 0.6} if far else None)
            box = text.get_window_extent(renderer).padded(2)
            if _within(box, inside) and not any(box.overlaps(other) for other in taken):
                break
        taken.append(box)
        boxes.append(box)
    return boxes


def _box(x0: float, y0: float, x1: float, y1: float):  # type: ignore[no-untyped-def]
    from matplotlib.transforms import Bbox

    return Bbox([[x0, y0], [x1, y1]])


def _within(box, outer) -> bool:  # type: ignore[no-untyped-def]
    return box.x0 >= outer.x0 and box.x1 <= outer.x1 and box.y0 >= outer.y0 and box.y1 <= outer.y1


def _plain(value: float) -> str:
    """A tick label in fixed point (never 1e-05): as many decimals as the value needs, at most 10."""
    text = f"{value:.10f}".rstrip("0").rstrip(".")
    return text or "0"


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
