"""Every background loop of the operator runs here, and nowhere else: the readiness prober, key
rotation, the child watches, the periodic resync.

A loop is one ``step`` called over and over. A step that raises never ends the loop: the failure
is logged and the loop backs off (1 s, doubling to ``max_backoff``) and tries again; a step that
succeeds resets the backoff. Each loop beats a heartbeat when a step starts and ends, and
``/healthz`` fails when any loop's thread died or has not beaten for ``stale_after``, so a stuck
or dead loop restarts the pod instead of leaving the operator half-working for good.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable

log = logging.getLogger(__name__)


class Supervised:
    def __init__(
        self,
        name: str,
        step: Callable[[], object],
        *,
        every: float,
        stale_after: float,
        max_backoff: float = 30.0,
        first_after: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name, self._step, self.every, self.stale_after, self.max_backoff = name, step, every, stale_after, max_backoff
        self._clock, self._first_after = clock, first_after
        self._stopping, self._wake = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.last_beat = clock()
        self.failures = 0  # consecutive failed steps
        self.last_error = ""

    def start(self) -> Supervised:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    def wake(self) -> None:
        """Run the next step now rather than after the wait (a resync someone asked for)."""
        self._wake.set()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and self._clock() - self.last_beat < self.stale_after

    def _run(self) -> None:
        self._wake.wait(self._first_after)
        self._wake.clear()
        while not self._stopping.is_set():
            self.last_beat = self._clock()
            try:
                self._step()
            except Exception as error:  # noqa: BLE001 - this is the one place a loop's failures end up
                self.failures += 1
                self.last_error = f"{type(error).__name__}: {error}"
                delay = min(self.max_backoff, 2.0 ** (self.failures - 1))
                log.warning("%s failed (%d in a row), retrying in %.0fs: %s", self.name, self.failures, delay, self.last_error)
            else:
                self.failures, self.last_error, delay = 0, "", self.every
            self.last_beat = self._clock()
            self._wake.wait(delay)
            self._wake.clear()


def dead(loops: Iterable[Supervised]) -> list[str]:
    """The names of the loops that died or stopped beating."""
    return [loop.name for loop in loops if not loop.alive]
