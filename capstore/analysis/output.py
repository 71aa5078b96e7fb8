"""Query results as text (an aligned table, CSV, JSON) or as a Parquet file."""

from __future__ import annotations

import csv
import io
import json
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from capstore.errors import InputError

if TYPE_CHECKING:
    import pyarrow

FORMATS = ("table", "csv", "json", "parquet")
MAX_CELL = 80  # table format only: long texts are cut so rows stay one line each


def table_rows(table: "pyarrow.Table") -> list[tuple[Any, ...]]:
    """The table's rows as tuples, column by column, so that two columns of one name both stay."""
    return list(zip(*(column.to_pylist() for column in table.columns)))


def render(columns: Sequence[str], rows: Sequence[Sequence[Any]], fmt: str) -> str:
    """``rows`` as ``table``, ``csv`` or ``json`` (a list of objects) text."""
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([["" if v is None else _plain(v) for v in row] for row in rows])
        return buf.getvalue()
    if fmt == "json":
        return json.dumps([dict(zip(columns, row)) for row in rows], default=_plain, indent=1) + "\n"
    if fmt == "table":
        if list(columns) == ["explain_key", "explain_value"]:  # EXPLAIN: the plan as drawn, not one cut line
            return "\n".join(str(row[1]) for row in rows) + "\n"
        return _table(columns, rows)
    raise InputError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")


def write_parquet(table: "pyarrow.Table", path: str | Path) -> Path:
    """Write an Arrow table as one Parquet file (its folder must exist)."""
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.parent.is_dir():
        raise InputError(f"cannot write {path}: folder {path.parent} does not exist")
    pq.write_table(table, path)
    return path


def _table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    numeric = [all(isinstance(row[i], (int, float)) or row[i] is None for row in rows) for i in range(len(columns))]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)).rstrip()

    out = [line(columns), "  ".join("-" * w for w in widths)] + [line(r) for r in cells]
    out.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return "\n".join(out) + "\n"


def _cell(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, float):
        return f"{value:.6g}"
    text = _plain(value).replace("\n", " ")
    return text if len(text) <= MAX_CELL else text[: MAX_CELL - 1] + "…"


def _plain(value: Any) -> str:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    return str(value) if not isinstance(value, (list, dict)) else json.dumps(value, default=str)


def make_dir(path: str | Path) -> Path:
    """Create folder ``path`` (and parents) or raise a one-line InputError saying why not."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create folder {path}: {exc.strerror or exc}") from exc
    return path
