"""How the pages write numbers, money, durations and times (Jinja filters)."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

DASH = "–"


def number(value: Any, digits: int = 3) -> str:
    """Fixed point with ``digits`` decimals; a dash for none (never ``nan`` or scientific notation)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return DASH
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:,.{digits}f}"


def signed(value: Any, digits: int = 3) -> str:
    """A delta with its sign."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return DASH
    return f"{value:+,.{digits}f}"


def usd(value: Any) -> str:
    """Dollars: cents above a dollar, four decimals below a cent, so small costs do not read as zero."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return DASH
    if value == 0:
        return "$0"
    if abs(value) >= 1:
        return f"${value:,.2f}"
    return f"${value:.4f}" if abs(value) >= 0.0001 else f"${value:.2e}".replace("e", "×10^")


def duration(seconds: Any) -> str:
    """``42 s``, ``3 min 5 s``, ``2 h 10 min``."""
    if seconds is None or (isinstance(seconds, float) and not math.isfinite(seconds)):
        return DASH
    seconds = float(seconds)
    if seconds < 60:
        return f"{seconds:.0f} s" if seconds >= 1 else f"{seconds:.2f} s"
    minutes, sec = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {sec} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def percent(value: Any) -> str:
    if value is None:
        return DASH
    return f"{100 * value:.0f}%"


def when(value: Any) -> str:
    """A timestamp to the second (UTC, as the views give it)."""
    if value is None:
        return DASH
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return str(value)[:19]


def cell(value: Any) -> str:
    """A SQL result cell: NULL shown as such, floats to six significant digits, the rest as text."""
    if value is None:
        return "NULL"
    if isinstance(value, float):
        return f"{value:.6g}" if math.isfinite(value) else str(value)
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


FILTERS = {"num": number, "signed": signed, "usd": usd, "duration": duration, "pct": percent, "when": when,
           "cell": cell}
