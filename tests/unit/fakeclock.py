"""A clock that moves only when the test says so, for the work queue.

``FakeClock`` is the queue's ``clock`` and, with ``FakeClock.condition``, its ``condition`` factory:
every wait of the queue's threads goes through it, so a test knows when they have done all there
is to do (``settle``) instead of sleeping and hoping. Waits ignore their timeouts: fake time only
moves in ``advance``, which wakes every waiting thread to look at the new time.
"""

from __future__ import annotations

import threading

SETTLE_TIMEOUT_S = 10.0  # a safety net for a broken queue, never a synchronisation


class FakeClock:
    def __init__(self, *, start: float = 1_800_000_000.0) -> None:
        self.now = start
        self.threads = 0  # how many threads wait on its conditions: the queue's workers and its scheduler
        self._lock: threading.Lock | None = None
        self._conditions: list[_Condition] = []
        self._changed: threading.Condition | None = None  # notified whenever a thread begins to wait

    def __call__(self) -> float:
        return self.now

    def condition(self, lock: threading.Lock) -> threading.Condition:
        if self._lock is None:
            self._lock, self._changed = lock, threading.Condition(lock)
        assert lock is self._lock, "one FakeClock per queue"
        condition = _Condition(lock, self)
        self._conditions.append(condition)
        return condition

    def advance(self, seconds: float, *, busy: int = 0) -> None:
        """Move time on by ``seconds``, then ``settle``: whatever fell due has been done."""
        with self._on_queue_lock():
            self.now += seconds
            for condition in self._conditions:
                condition.notify_all()
        self.settle(busy=busy)

    def settle(self, *, busy: int = 0) -> None:
        """Return once every thread of the queue but ``busy`` (held in ``process`` by the test) waits
        with nothing left to wake it: each key due or queued has been processed."""
        changed = self._on_queue_lock()
        with changed:
            if not changed.wait_for(lambda: self.idle == self.threads - busy, SETTLE_TIMEOUT_S):
                raise AssertionError(f"the queue did not settle: {self.idle} of {self.threads} threads idle, {busy} busy")

    @property
    def idle(self) -> int:
        """Threads waiting that no notify has woken yet (read with the queue's lock held)."""
        return sum(condition.waiting - condition.woken for condition in self._conditions)

    def _on_queue_lock(self) -> threading.Condition:
        assert self._changed is not None, "the queue was not built with this clock's conditions"
        return self._changed

    def _began_waiting(self) -> None:
        self._on_queue_lock().notify_all()


class _Condition(threading.Condition):
    """A Condition that counts its waiting threads and how many of them a notify has woken."""

    def __init__(self, lock: threading.Lock, clock: FakeClock) -> None:
        super().__init__(lock)
        self._clock = clock
        self.waiting = 0
        self.woken = 0

    def wait(self, timeout: float | None = None) -> bool:
        self.waiting += 1
        self._clock._began_waiting()
        try:
            return super().wait()  # no timeout: fake time passes only in advance(), which notifies
        finally:
            self.waiting -= 1
            self.woken -= 1

    def notify(self, n: int = 1) -> None:
        self.woken += min(n, self.waiting - self.woken)
        super().notify(n)

    def notify_all(self) -> None:
        self.notify(self.waiting - self.woken)  # every waiter not woken yet
