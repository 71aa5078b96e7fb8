"""Reading the files and names a user gives: one-line InputErrors for every pathological case.

Every text that reaches the store must be storable on both engines: PostgreSQL refuses NUL in text
columns and neither driver can encode a lone surrogate (what a ``\\ud800`` JSON escape or a file
name that is not UTF-8 decodes to), so both are refused here, naming the file and the line or the
JSON record, instead of being stored on SQLite and crashing on PostgreSQL. Files must be regular
files (a FIFO or ``/dev/zero`` would never end); symlink loops, nesting deeper than the JSON parser
can follow and integers longer than Python converts are one line each.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
import sys
from pathlib import Path
from typing import Any

from capstore.errors import InputError

_LONG_DIGITS = re.compile(rb"\d{%d,}" % 4301)


def read_bytes(path: str | Path, what: str) -> bytes:
    """The bytes of the regular file ``path``; ``what`` names it in errors (e.g. "pool file")."""
    path = Path(path)
    try:
        st = path.stat()
    except OSError as exc:
        raise InputError(f"cannot read {what} {display(path)}: {_reason(exc)}") from exc
    if stat.S_ISDIR(st.st_mode):
        raise InputError(f"cannot read {what} {display(path)}: it is a folder, not a file")
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"cannot read {what} {display(path)}: not a regular file (a device, pipe or socket)")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read {what} {display(path)}: {_reason(exc)}") from exc


def decode_text(raw: bytes, path: str | Path, what: str) -> str:
    """``raw`` as UTF-8 text without NUL characters; InputError naming the line otherwise."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = _line_of(raw, exc.start)
        raise InputError(f"{what} {display(path)} is not UTF-8 text: {exc.reason} at line {line} "
                         f"(byte {exc.start})") from exc
    nul = text.find("\x00")
    if nul >= 0:
        raise InputError(f"{what} {display(path)} contains a NUL character at line {text.count(chr(10), 0, nul) + 1}: "
                         "text with NUL cannot be stored (PostgreSQL refuses it)")
    return text.removeprefix("\ufeff")  # a UTF-8 byte-order mark is not content


def read_text(path: str | Path, what: str) -> str:
    """A UTF-8 text file (pool, prompt, …): InputError for a missing or special file, bad bytes or NUL."""
    return decode_text(read_bytes(path, what), path, what)


def read_json(path: str | Path, what: str, raw: bytes | None = None) -> Any:
    """A JSON file parsed strictly; every string in it is storable (no NUL, no lone surrogate).

    Refused in one line: malformed JSON (line and column), nesting too deep for the parser, integers
    longer than Python converts, ``NaN``/``Infinity`` (not JSON), NUL or lone surrogates in a string
    (named by their JSON path, e.g. ``annotations[3].caption``).
    """
    if raw is None:
        raw = read_bytes(path, what)
    text = decode_text(raw, path, what)
    try:
        data = json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        raise InputError(f"{what} {display(path)}: malformed JSON at line {exc.lineno} column {exc.colno}: "
                         f"{exc.msg}") from exc
    except RecursionError as exc:
        raise InputError(f"{what} {display(path)}: JSON nested too deeply (more than about "
                         f"{sys.getrecursionlimit()} levels of lists or objects)") from exc
    except _Constant as exc:
        raise InputError(f"{what} {display(path)}: {exc.args[0]} is not a JSON number") from exc
    except ValueError as exc:  # int() of more digits than sys.get_int_max_str_digits()
        found = _LONG_DIGITS.search(raw)
        where = f" at line {_line_of(raw, found.start())}" if found else ""
        digits = f" of {found.end() - found.start()} digits" if found else ""
        raise InputError(f"{what} {display(path)}: an integer{digits}{where} is longer than Python reads "
                         f"({sys.get_int_max_str_digits()} digits)") from exc
    culprit = _first_unstorable(data)
    if culprit is not None:
        where, problem = culprit
        raise InputError(f"{what} {display(path)}: {where or 'the top level'} {problem}")
    return data


class _Constant(ValueError):
    pass


def _refuse_constant(name: str) -> float:
    raise _Constant(name)


def _first_unstorable(data: Any) -> tuple[str, str] | None:
    """(JSON path, what is wrong) of the first string that cannot be stored; walks without recursion."""
    stack: list[tuple[str, Any]] = [("", data)]
    while stack:
        where, value = stack.pop()
        if isinstance(value, str):
            problem = text_problem(value)
            if problem:
                return where, problem
        elif isinstance(value, dict):
            for key, item in reversed(list(value.items())):
                problem = text_problem(key)
                if problem:
                    return f"{where} key {key!r}".strip(), problem
                stack.append((f"{where}.{key}" if where else str(key), item))
        elif isinstance(value, list):
            stack.extend((f"{where}[{n}]", item) for n, item in reversed(list(enumerate(value))))
        elif isinstance(value, float) and not math.isfinite(value):  # 1e999 parses as inf
            return where, "is a number too large for a float"
    return None


def text_problem(value: str) -> str | None:
    """Why ``value`` cannot be stored as text on every engine, or None."""
    if "\x00" in value:
        return "contains a NUL character (\\u0000), which PostgreSQL cannot store"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"contains a lone surrogate {value[exc.start]!r} (an unpaired \\ud800-\\udfff escape), not valid text"
    return None


def check_text(value: str, what: str) -> str:
    """``value`` if it can be stored as text on every engine; InputError naming ``what`` otherwise."""
    problem = text_problem(value)
    if problem:
        raise InputError(f"{what} '{display(value)}' {problem}")
    return value


def storable_path(path: str | Path, what: str) -> str:
    """The absolute path of ``path`` as text the store can hold; a name that is not UTF-8 is refused."""
    resolved = str(Path(path).resolve())
    try:
        resolved.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InputError(f"{what} {display(path)} has a name that is not valid UTF-8; rename it") from exc
    return resolved


def display(value: str | bytes | Path) -> str:
    """A name for an error message: bytes that are not UTF-8 and lone surrogates as escapes, NUL as ``\\x00``."""
    text = os.fsdecode(value)
    try:
        shown = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:
        shown = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return shown.replace("\x00", "\\x00")


def brief(value: object, limit: int = 80) -> str:
    """``repr(value)`` for an error message, its middle elided past ``limit`` characters: the end of a
    long path (the file's own name) says more than a cut-off front."""
    shown = repr(value)
    if len(shown) <= limit:
        return shown
    keep = (limit - 3) // 2
    return f"{shown[:keep]}...{shown[-(limit - 3 - keep):]}"


def _line_of(raw: bytes, offset: int) -> int:
    return raw.count(b"\n", 0, offset) + 1


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)
