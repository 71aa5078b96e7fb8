"""Small plots drawn on the server as inline SVG: a line chart and a scatter chart.

Hand-written rather than matplotlib: a page draws them in microseconds (matplotlib needs ~0.5 s to
import and tens of milliseconds a figure), they scale with the page, and their text is selectable.
Every label is escaped; a chart without data is an empty string (the page says why).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from markupsafe import Markup, escape

PALETTE = ("#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#4b5563", "#ca8a04")
MARGIN = (46, 14, 34, 52)  # top, right, bottom, left: room for the title, ticks and axis labels


@dataclass
class Series:
    """A named line of (x, y) points; ``dashed`` for a second quantity on the same axes."""

    label: str
    points: Sequence[tuple[float, float]]
    dashed: bool = False


@dataclass
class Point:
    """A labelled point of a scatter chart; ``highlight`` draws it larger and in the first colour."""

    label: str
    x: float
    y: float
    highlight: bool = False
    href: str | None = None


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values covering [lo, hi] (1, 2 or 5 times a power of ten apart)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return []
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / max(count - 1, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.floor(lo / step) * step
    ticks = []
    value = first
    while value <= hi + step * 0.5 and len(ticks) < 20:
        ticks.append(round(value, 12))
        value += step
    return ticks


def tick_label(value: float) -> str:
    """A tick's text: plain fixed-point, no scientific notation, no trailing zeros."""
    if value == 0:
        return "0"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    digits = max(0, min(6, 2 - math.floor(math.log10(abs(value)))))
    return f"{value:.{digits}f}".rstrip("0").rstrip(".") if digits else f"{value:.0f}"


class _Frame:
    """Maps data coordinates to the SVG box (linear, or log10 on x)."""

    def __init__(self, width: int, height: int, xs: Sequence[float], ys: Sequence[float], log_x: bool) -> None:
        self.width, self.height, self.log_x = width, height, log_x
        top, right, bottom, left = MARGIN
        self.box = (left, top, width - right, height - bottom)
        fx = [self._fx(x) for x in xs]
        self.x_ticks = _log_ticks(min(xs), max(xs)) if log_x else nice_ticks(min(xs), max(xs))
        self.y_ticks = nice_ticks(min(ys), max(ys))
        self.x0 = min(fx + [self._fx(t) for t in self.x_ticks]) if self.x_ticks else min(fx)
        self.x1 = max(fx + [self._fx(t) for t in self.x_ticks]) if self.x_ticks else max(fx)
        self.y0 = min(list(ys) + self.y_ticks)
        self.y1 = max(list(ys) + self.y_ticks)
        if self.x1 == self.x0:
            self.x0, self.x1 = self.x0 - 1, self.x1 + 1
        if self.y1 == self.y0:
            self.y0, self.y1 = self.y0 - 1, self.y1 + 1

    def _fx(self, x: float) -> float:
        return math.log10(x) if self.log_x else x

    def px(self, x: float) -> float:
        left, _, right, _ = self.box
        return left + (self._fx(x) - self.x0) / (self.x1 - self.x0) * (right - left)

    def py(self, y: float) -> float:
        _, top, _, bottom = self.box
        return bottom - (y - self.y0) / (self.y1 - self.y0) * (bottom - top)

    def axes(self, title: str, xlabel: str, ylabel: str) -> list[str]:
        left, top, right, bottom = self.box
        out = [f'<text class="title" x="{left}" y="16">{escape(title)}</text>',
               f'<rect class="plot" x="{left}" y="{top}" width="{right - left}" height="{bottom - top}"/>']
        for t in self.y_ticks:
            y = self.py(t)
            out.append(f'<line class="grid" x1="{left}" x2="{right}" y1="{y:.1f}" y2="{y:.1f}"/>'
                       f'<text class="tick" x="{left - 4}" y="{y + 3:.1f}" text-anchor="end">{tick_label(t)}</text>')
        for t in self.x_ticks:
            x = self.px(t)
            out.append(f'<line class="grid" x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{bottom}"/>'
                       f'<text class="tick" x="{x:.1f}" y="{bottom + 13}" text-anchor="middle">{tick_label(t)}</text>')
        out.append(f'<text class="axis" x="{(left + right) / 2:.0f}" y="{self.height - 4}" '
                   f'text-anchor="middle">{escape(xlabel)}</text>')
        out.append(f'<text class="axis" transform="translate(12,{(top + bottom) / 2:.0f}) rotate(-90)" '
                   f'text-anchor="middle">{escape(ylabel)}</text>')
        return out


def _log_ticks(lo: float, hi: float) -> list[float]:
    first, last = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    if last == first:
        last += 1
    return [10.0 ** e for e in range(first, last + 1)]


def _svg(width: int, height: int, body: list[str], label: str) -> Markup:
    return Markup(f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
                  f'role="img" aria-label="{escape(label)}" xmlns="http://www.w3.org/2000/svg">'
                  + "".join(body) + "</svg>")


def line_chart(series: Sequence[Series], title: str, xlabel: str, ylabel: str, width: int = 390,
               height: int = 240, integer_x: bool = True) -> Markup:
    """Lines with markers, one colour per series, and a legend; '' when no series has a finite point."""
    series = [Series(s.label, [(x, y) for x, y in s.points if _finite(x, y)], s.dashed) for s in series]
    series = [s for s in series if s.points]
    if not series:
        return Markup("")
    xs = [x for s in series for x, _ in s.points]
    ys = [y for s in series for _, y in s.points]
    frame = _Frame(width, height, xs, ys, log_x=False)
    if integer_x:  # iterations: the axis spans the data, ticks on whole numbers
        frame.x0, frame.x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
        frame.x_ticks = [t for t in frame.x_ticks if float(t).is_integer() and frame.x0 <= t <= frame.x1]
    body = frame.axes(title, xlabel, ylabel)
    for k, s in enumerate(series):
        colour = PALETTE[k % len(PALETTE)]
        path = " ".join(f"{frame.px(x):.1f},{frame.py(y):.1f}" for x, y in s.points)
        dash = ' stroke-dasharray="5 3"' if s.dashed else ""
        body.append(f'<polyline class="line" points="{path}" stroke="{colour}"{dash}/>')
        for x, y in s.points:
            body.append(f'<circle cx="{frame.px(x):.1f}" cy="{frame.py(y):.1f}" r="2.5" fill="{colour}">'
                        f'<title>{escape(s.label)}: {x:g}, {y:.4g}</title></circle>')
    body += _legend(width, [(s.label, PALETTE[k % len(PALETTE)], s.dashed) for k, s in enumerate(series)])
    return _svg(width, height, body, title)


def scatter_chart(points: Sequence[Point], title: str, xlabel: str, ylabel: str, log_x: bool = False,
                  width: int = 390, height: int = 240) -> Markup:
    """Labelled points (linked where ``href`` is set); '' without a finite point (or a non-positive x on a
    log axis)."""
    points = [p for p in points if _finite(p.x, p.y) and (p.x > 0 or not log_x)]
    if not points:
        return Markup("")
    frame = _Frame(width, height, [p.x for p in points], [p.y for p in points], log_x=log_x)
    body = frame.axes(title, xlabel, ylabel)
    ordered = sorted(points, key=lambda p: p.highlight)  # the highlighted point drawn last, on top
    centres = [(frame.px(p.x), frame.py(p.y)) for p in ordered]
    placed: list[tuple[float, float, float, float]] = []
    for p, (x, y) in zip(ordered, centres):
        colour, r = (PALETTE[1], 5.5) if p.highlight else (PALETTE[0], 4)
        lx, ly, anchor = _place_label(p.label, x, y, frame, centres, placed)
        dot = (f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{r}" fill="{colour}"><title>{escape(p.label)}: '
               f'{p.x:.4g}, {p.y:.4g}</title></circle>'
               f'<text class="label" x="{lx:.1f}" y="{ly:.1f}" text-anchor="{anchor}">{escape(p.label)}</text>')
        body.append(f'<a href="{escape(p.href)}">{dot}</a>' if p.href else dot)
    return _svg(width, height, body, title)


LABEL_CHAR_W, LABEL_H = 6.0, 11.0
# Where a label may go from its point (dx, dy of the text's baseline start), nearest first.
_LABEL_SPOTS = [(7, -6), (7, 12), (-7, -6), (-7, 12), (0, -10), (0, 18), (14, -16), (-14, -16), (14, 24), (-14, 24)]


def _place_label(label: str, x: float, y: float, frame: "_Frame", centres: Sequence[tuple[float, float]],
                 placed: list[tuple[float, float, float, float]]) -> tuple[float, float, str]:
    """The first spot where the label's box overlaps no placed label and no other point and stays in the
    plot; the first spot if none does. Records the box in ``placed``."""
    w = LABEL_CHAR_W * len(label)
    left, top, right, bottom = frame.box
    best = None
    for dx, dy in _LABEL_SPOTS:
        anchor = "start" if dx > 0 else ("end" if dx < 0 else "middle")
        x0 = x + dx - (w if anchor == "end" else w / 2 if anchor == "middle" else 0)
        box = (x0, y + dy - LABEL_H + 2, x0 + w, y + dy + 2)
        inside = box[0] >= left and box[2] <= right + 40 and box[1] >= top - 10 and box[3] <= bottom
        clear = all(not _overlap(box, other) for other in placed) and all(
            not (box[0] - 3 <= cx <= box[2] + 3 and box[1] - 3 <= cy <= box[3] + 3)
            for cx, cy in centres if (cx, cy) != (x, y))
        if best is None:
            best = (x + dx, y + dy, anchor, box)
        if inside and clear:
            best = (x + dx, y + dy, anchor, box)
            break
    assert best is not None
    placed.append(best[3])
    return best[0], best[1], best[2]


def _overlap(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _legend(width: int, entries: list[tuple[str, str, bool]]) -> list[str]:
    out = []
    x = width - MARGIN[1]
    for label, colour, dashed in reversed(entries):
        text_w = 6.2 * len(label)
        x -= text_w + 26
        dash = ' stroke-dasharray="5 3"' if dashed else ""
        out.append(f'<line x1="{x:.0f}" x2="{x + 16:.0f}" y1="32" y2="32" stroke="{colour}" stroke-width="2"{dash}/>'
                   f'<text class="legend" x="{x + 20:.0f}" y="35">{escape(label)}</text>')
    return out


def _finite(*values: float | None) -> bool:
    return all(v is not None and isinstance(v, (int, float)) and math.isfinite(v) for v in values)
