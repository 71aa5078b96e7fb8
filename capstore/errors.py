"""Errors a user can fix. The CLI prints them as one line (no stack trace) and exits with 2."""


class CapstoreError(Exception):
    """A user-facing error: bad input, an unreachable store, an unknown name. One line, names the culprit."""


class StoreError(CapstoreError):
    """The store cannot be opened or is of a version this code cannot use."""


class InputError(CapstoreError):
    """A file, option or record given by the user is malformed or refers to something unknown."""


class BackendError(CapstoreError):
    """A model backend cannot be loaded or called (missing extra, no GPU, bad weights)."""
