"""A Ctrl-C that is never lost while a worker works.

Python raises a Ctrl-C's KeyboardInterrupt wherever the main thread happens to be. When that is a
finalizer (an object's ``__del__``, a weakref callback: SQLAlchemy's sessions and pools run many),
Python only prints it ("Exception ignored in ...") and goes on: the run went on to its end and the
process exited 0, as seen once in the test suite under load. ``CtrlC`` remembers the interrupt, so
the worker stops at its next step (``check``) as after any Ctrl-C.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType, TracebackType


class CtrlC:
    """While entered in the main thread with Python's own SIGINT handler: remember every Ctrl-C."""

    def __init__(self) -> None:
        self.pressed = threading.Event()
        self._installed = False

    def __enter__(self) -> "CtrlC":
        # Only Python's default handler is replaced: a program that set its own keeps it.
        if threading.current_thread() is threading.main_thread() and \
                signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            signal.signal(signal.SIGINT, self._on_sigint)
            self._installed = True
        return self

    def _on_sigint(self, signum: int, frame: FrameType | None) -> None:
        self.pressed.set()
        raise KeyboardInterrupt

    def check(self) -> None:
        """Raise KeyboardInterrupt if a Ctrl-C came (also one a finalizer swallowed)."""
        if self.pressed.is_set():
            raise KeyboardInterrupt

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            self._installed = False
