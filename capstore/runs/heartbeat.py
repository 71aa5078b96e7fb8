"""A worker's heartbeat: a daemon thread that keeps the worker's leases alive while it lives.

One model call can outlast a short lease (a 50-line generation for 16 images, a pool encode), so
renewing between steps is not enough: the thread renews every ``lease / 3`` seconds, in its own
transactions on its own pooled connection. When the process dies the beats stop and the leases run
out within one lease; nothing else is needed for another worker, anywhere, to take the items over.
A beat that fails (database briefly unreachable) is retried at the next beat; if leases expire
meanwhile, the step commit's lease check sees it and the items are simply done by someone else.
"""

from __future__ import annotations

import logging
import threading
from types import TracebackType

from capstore.runs.leases import renew
from capstore.store.engine import Store

log = logging.getLogger(__name__)


class Heartbeat:
    """Renews ``worker``'s leases on ``run_id`` every ``interval`` seconds (default ``lease / 3``)."""

    def __init__(self, store: Store, run_id: int, worker: str, lease_seconds: float,
                 interval: float | None = None) -> None:
        self.store, self.run_id, self.worker, self.lease_seconds = store, run_id, worker, lease_seconds
        self.interval = interval if interval is not None else lease_seconds / 3
        self.beats = 0  # successful renewals (tests read it)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"capstore-heartbeat-{run_id}", daemon=True)

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop beating (waits for a beat in progress to end, but not for ever: a beat hung on an
        unreachable store must not keep the worker from exiting; the thread is a daemon)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.interval + 5)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                renew(self.store, self.run_id, self.worker, self.lease_seconds)
                self.beats += 1
            except Exception as exc:  # never kill the worker over a missed beat
                log.warning("heartbeat of %s on run %d failed: %s", self.worker, self.run_id, exc)
