"""A rate-limited work queue with deadlines, as client-go's workqueue does it.

- A key is queued at most once, and never processed by two workers at once: an add while it is
  being processed marks it dirty and it runs again right after.
- ``add_at`` keeps one deadline per key (the latest answer replaces the earlier one); one
  scheduler thread sleeps until the earliest deadline, so 10,000 identities cost one timer,
  not 10,000, and a deadline fires on the second it is due.
- A failed key is retried with exponential backoff.

No kopf, no Kubernetes: the operator feeds it keys and a function to process them.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)

BACKOFF_BASE_S = 0.5
BACKOFF_MAX_S = 60.0


class WorkQueue(Generic[K]):
    def __init__(
        self,
        process: Callable[[K], float | None],
        *,
        workers: int,
        clock: Callable[[], float] = time.time,
        name: str = "workqueue",
    ) -> None:
        """``process(key)`` returns the wall-clock time to process the key again, or None."""
        self._process = process
        self._workers = workers
        self._clock = clock
        self._name = name
        mutex = threading.Lock()
        self._lock = threading.Condition(mutex)  # workers wait here for keys
        self._queue: deque[K] = deque()
        self._urgent: deque[K] = deque()  # served first, in arrival order
        self._queued: set[K] = set()
        self._processing: set[K] = set()
        self._dirty: set[K] = set()
        self._due: dict[K, float] = {}
        self._heap: list[tuple[float, int, K]] = []
        self._sequence = 0
        self._failures: dict[K, int] = {}
        self._scheduler_wakeup = threading.Condition(mutex)  # the scheduler waits here for deadlines
        self._stopping = False
        self._paused = False
        self._threads: list[threading.Thread] = []

    # -- producers ------------------------------------------------------------------------------

    def add(self, key: K, *, urgent: bool = False) -> None:
        """Queue ``key``; ``urgent`` keys (a deadline due) are served before all others, first
        come first served among themselves (so a flood of deadlines cannot starve the oldest)."""
        with self._lock:
            self._add_locked(key, urgent=urgent)

    def add_at(self, key: K, when: float) -> None:
        """Process ``key`` at ``when`` (replacing any earlier request for it)."""
        with self._lock:
            self._schedule_locked(key, when)

    def forget(self, key: K) -> None:
        """Drop the key's deadline and failure history (its object is gone)."""
        with self._lock:
            self._due.pop(key, None)
            self._failures.pop(key, None)

    def _add_locked(self, key: K, *, urgent: bool = False) -> None:
        if key in self._processing:
            self._dirty.add(key)
        elif key not in self._queued:
            self._queued.add(key)
            (self._urgent if urgent else self._queue).append(key)
            self._lock.notify()
        elif urgent and key not in self._urgent:  # already waiting: move it to the urgent lane
            self._queue.remove(key)
            self._urgent.append(key)

    def _schedule_locked(self, key: K, when: float) -> None:
        self._due[key] = when
        self._sequence += 1
        heapq.heappush(self._heap, (when, self._sequence, key))
        if self._heap[0][2] == key:
            self._scheduler_wakeup.notify_all()

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        self._threads = [threading.Thread(target=self._schedule_loop, name=f"{self._name}-scheduler", daemon=True)]
        self._threads += [
            threading.Thread(target=self._work_loop, name=f"{self._name}-worker-{n}", daemon=True) for n in range(self._workers)
        ]
        for thread in self._threads:
            thread.start()

    def pause(self) -> None:
        """Keep queueing and scheduling, but process nothing (a standby replica)."""
        with self._lock:
            self._paused = True

    def resume(self) -> None:
        with self._lock:
            self._paused = False
            self._lock.notify_all()

    def stop(self, timeout: float = 10.0) -> None:
        with self._lock:
            self._stopping = True
            self._lock.notify_all()
            self._scheduler_wakeup.notify_all()
        for thread in self._threads:
            thread.join(timeout)

    def __len__(self) -> int:
        with self._lock:
            return len(self._urgent) + len(self._queue) + len(self._processing)

    @property
    def alive(self) -> bool:
        return bool(self._threads) and all(thread.is_alive() for thread in self._threads)

    @property
    def pending_deadlines(self) -> int:
        with self._lock:
            return len(self._due)

    # -- consumers ------------------------------------------------------------------------------

    def _schedule_loop(self) -> None:
        with self._lock:
            while not self._stopping:
                now = self._clock()
                while self._heap and self._heap[0][0] <= now:
                    when, _, key = heapq.heappop(self._heap)
                    if self._due.get(key) == when:  # else superseded by a later add_at
                        del self._due[key]
                        self._add_locked(key, urgent=True)  # a deadline never waits behind routine work
                timeout = max(0.0, self._heap[0][0] - now) if self._heap else None
                self._scheduler_wakeup.wait(timeout)

    def _work_loop(self) -> None:
        while True:
            with self._lock:
                while (not (self._urgent or self._queue) or self._paused) and not self._stopping:
                    self._lock.wait()
                if self._stopping:
                    return
                key = (self._urgent or self._queue).popleft()
                self._queued.discard(key)
                self._processing.add(key)
            next_at = self._run(key)
            with self._lock:
                self._processing.discard(key)
                if next_at is not None:
                    self._schedule_locked(key, next_at)
                if key in self._dirty:
                    self._dirty.discard(key)
                    self._add_locked(key)

    def _run(self, key: K) -> float | None:
        try:
            next_at = self._process(key)
        except Exception as error:  # noqa: BLE001 - a worker must survive any one key's failure
            with self._lock:
                failures = self._failures.get(key, 0) + 1
                self._failures[key] = failures
            delay = min(BACKOFF_BASE_S * 2.0 ** (failures - 1), BACKOFF_MAX_S)
            log.warning("processing %s failed (attempt %d, retry in %.1fs): %s", key, failures, delay, error)
            return self._clock() + delay
        with self._lock:
            self._failures.pop(key, None)
        return next_at
