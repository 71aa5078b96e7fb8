"""Errors a user can fix. The CLI prints them as one line (no stack trace) and exits with 2."""


class CapstoreError(Exception):
    """A user-facing error: bad input, an unreachable store, an unknown name. One line, names the culprit."""


class StoreError(CapstoreError):
    """The store cannot be opened or is of a version this code cannot use."""


class InputError(CapstoreError):
    """A file, option or record given by the user is malformed or refers to something unknown."""


class BackendError(CapstoreError):
    """A model backend cannot be loaded or called (missing extra, no GPU, bad weights)."""


def first_line(exc: BaseException, limit: int | None = None, *, named: bool = False) -> str:
    """The first non-empty line of ``exc``'s message (cut at ``limit``), or its class name when it has none;
    ``named``: after the class name (``ValueError: bad frame``)."""
    line = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
    line = line[:limit] if limit is not None else line
    if named:
        return f"{type(exc).__name__}: {line}" if line else type(exc).__name__
    return line or type(exc).__name__
