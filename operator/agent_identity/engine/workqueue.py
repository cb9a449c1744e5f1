"""A rate-limited work queue with deadlines, as client-go's workqueue does it.

- A key is queued at most once, and never processed by two workers at once: an add while it is
  being processed marks it dirty and it runs again right after.
- ``add_at`` keeps one deadline per key (the latest answer replaces the earlier one); one
  scheduler thread sleeps until the earliest deadline, so 10,000 identities cost one timer,
  not 10,000, and a deadline fires on the second it is due.
- A failed key is retried with exponential backoff.
- Lanes, served in order: urgent (a deadline due), routine (something changed) and
  background (re-verifying what looked fine, after a restart). Each is first come first served.
  While routine work waits, one key in ``URGENT_RUN + 1`` is taken from it: a burst of deadlines
  (a restart after downtime, a fleet created together) then slows down by a quarter instead of
  keeping every new identity waiting until the whole burst is retired.
  A lane can be held (the background one while a listing fills the queue: re-verifying the first
  pages would slow down the listing that finds the overdue and the rest).
- What was changed while the queue was paused (a standby's, at its take-over) is a backlog:
  :meth:`resume` moves it to its own lane, which takes turns with the routine lane, one key each.
  It is late already (by up to a lease); a change made after the take-over is then not kept
  waiting behind all of it too, and the backlog is still served at half the pace or better.

No kopf, no Kubernetes: the operator feeds it keys and a function to process them.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from enum import IntEnum
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)

BACKOFF_BASE_S = 0.5
BACKOFF_MAX_S = 60.0
URGENT_RUN = 3  # urgent keys taken in a row while routine ones wait


class Lane(IntEnum):
    """Served in this order; a key waiting in a later lane moves up when added to an earlier one."""

    URGENT = 0
    ROUTINE = 1
    BACKLOG = 2  # changed while paused: takes turns with ROUTINE (see _pop_locked)
    BACKGROUND = 3


_CHANGED = (Lane.ROUTINE, Lane.BACKLOG)


class WorkQueue(Generic[K]):
    def __init__(
        self,
        process: Callable[[K], float | None],
        *,
        workers: int,
        clock: Callable[[], float] = time.time,
        condition: Callable[[threading.Lock], threading.Condition] = threading.Condition,
        name: str = "workqueue",
    ) -> None:
        """``process(key)`` returns the wall-clock time to process the key again, or None.

        ``clock`` tells the time deadlines are compared with, and ``condition`` makes the two
        conditions every wait goes through (the workers' and the scheduler's, on one lock), so a
        test can run the queue on a fake clock it moves by hand and see when its threads wait.
        """
        self._process = process
        self._workers = workers
        self._clock = clock
        self._name = name
        mutex = threading.Lock()
        self._lock = condition(mutex)  # workers wait here for keys
        self._lanes: tuple[deque[K], ...] = tuple(deque() for _ in Lane)
        self._queued: dict[K, Lane] = {}  # a lane may also hold stale entries of keys that moved
        self._waiting = [0 for _ in Lane]  # keys queued per lane (the values of _queued, counted)
        self._processing: dict[K, Lane] = {}  # key -> the lane it was taken from
        self._dirty: dict[K, Lane] = {}  # asked for while processed: again right after, in the best lane asked
        self._due: dict[K, float] = {}
        self._heap: list[tuple[float, int, K]] = []
        self._sequence = 0
        self._failures: dict[K, int] = {}
        self._scheduler_wakeup = condition(mutex)  # the scheduler waits here for deadlines
        self._finished = condition(mutex)  # wait_until_clear waits here for keys to be done
        self._stopping = False
        self._paused = False
        self._holds: dict[Lane, int] = {}  # lane -> how many holders (hold/release nest)
        self._urgent_run = 0  # urgent keys taken since the last routine or backlog one
        self._backlog_turn = False  # the next changed key comes from the backlog, if any waits there
        # Asked under the queue's lock before each key is taken: False holds the workers as
        # pause() does. A leader's elector answers from its local clock, so a leader frozen past
        # its lease takes no key when thawed, before its elector has even run (leader.py).
        self.may_process: Callable[[], bool] = lambda: True
        self._threads: list[threading.Thread] = []

    # -- producers ------------------------------------------------------------------------------

    def add(self, key: K, *, lane: Lane = Lane.ROUTINE) -> None:
        """Queue ``key`` in ``lane`` (or move it up to it, if it waits in a later one)."""
        with self._lock:
            self._add_locked(key, lane)

    def put(self, key: K, lane: Lane) -> None:
        """Queue ``key`` in exactly ``lane``: moved down too, if it waits in an earlier one (a
        standby keeps each key where its newest state says, see Controller.observe). A key being
        processed runs again right after, as :meth:`add` has it."""
        with self._lock:
            self._add_locked(key, lane, exact=True)

    def add_at(self, key: K, when: float) -> None:
        """Process ``key`` at ``when`` (replacing any earlier request for it)."""
        with self._lock:
            self._schedule_locked(key, when)

    def forget(self, key: K) -> None:
        """Drop the key's deadline and failure history (its object is gone)."""
        with self._lock:
            self._due.pop(key, None)
            self._failures.pop(key, None)

    def _add_locked(self, key: K, lane: Lane = Lane.ROUTINE, *, exact: bool = False) -> None:
        if key in self._processing:
            self._dirty[key] = min(lane, self._dirty.get(key, lane))
            return
        waiting = self._queued.get(key)
        if waiting is not None and (waiting == lane or (waiting < lane and not exact)):
            return
        if waiting is not None:
            self._waiting[waiting] -= 1
        self._queued[key] = lane  # an entry left in the lane it moved from is skipped when it comes up
        self._waiting[lane] += 1
        self._lanes[lane].append(key)
        if waiting is None:
            self._lock.notify()

    def _pop_locked(self) -> tuple[K, Lane] | None:
        changed = _CHANGED[::-1] if self._backlog_turn else _CHANGED
        first = (*changed, Lane.URGENT) if self._urgent_run >= URGENT_RUN else (Lane.URGENT, *changed)
        for lane in (*first, Lane.BACKGROUND):
            key = self._pop_lane_locked(lane)
            if key is not None:
                self._urgent_run = self._urgent_run + 1 if lane is Lane.URGENT else 0
                if lane in _CHANGED:
                    self._backlog_turn = lane is Lane.ROUTINE
                return key, lane
        return None

    def _pop_lane_locked(self, lane: Lane) -> K | None:
        queue = self._lanes[lane]
        while queue and lane not in self._holds:
            key = queue.popleft()
            if self._queued.get(key) is lane:
                del self._queued[key]
                self._waiting[lane] -= 1
                return key
        return None

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

    def hold(self, lane: Lane) -> None:
        """Keep queueing into ``lane``, but take nothing from it until as many :meth:`release` calls."""
        with self._lock:
            self._holds[lane] = self._holds.get(lane, 0) + 1

    def release(self, lane: Lane) -> None:
        with self._lock:
            self._holds[lane] -= 1
            if not self._holds[lane]:
                del self._holds[lane]
                self._lock.notify_all()

    @property
    def paused(self) -> bool:
        with self._lock:
            return self._paused

    def resume(self) -> None:
        """Process again; what waits in the routine lane becomes the backlog (see the module)."""
        with self._lock:
            if self._paused:
                self._paused = False
                self._move_routine_to_backlog_locked()
            self._lock.notify_all()  # and a worker refused by may_process asks again

    def _move_routine_to_backlog_locked(self) -> None:
        for key in self._lanes[Lane.ROUTINE]:
            if self._queued.get(key) is Lane.ROUTINE:  # else a stale entry, of a key that moved
                self._queued[key] = Lane.BACKLOG
                self._lanes[Lane.BACKLOG].append(key)
        self._waiting[Lane.BACKLOG] += self._waiting[Lane.ROUTINE]
        self._waiting[Lane.ROUTINE] = 0
        self._lanes[Lane.ROUTINE].clear()

    def stop(self, timeout: float = 10.0) -> None:
        with self._lock:
            self._stopping = True
            self._lock.notify_all()
            self._scheduler_wakeup.notify_all()
            self._finished.notify_all()
        for thread in self._threads:
            thread.join(timeout)

    def wait_until_clear(self, lane: Lane, timeout: float) -> bool:
        """Blocks until no key waits in ``lane`` or runs from it, or ``timeout`` seconds have
        passed (on the queue's clock); whether it cleared. A queue that takes no keys (not
        started, paused, stopped) counts as clear: it would never clear. Work outside the queue
        gives way to a lane with it (a listing to the deadlines due, so that a burst of them is
        not slowed down by it)."""
        deadline = self._clock() + timeout
        with self._lock:
            while self._takes_keys_locked() and self._busy_locked(lane):
                remaining = deadline - self._clock()
                if remaining <= 0:
                    return False
                self._finished.wait(remaining)
            return True

    def _takes_keys_locked(self) -> bool:
        return bool(self._threads) and not self._stopping and not self._paused and self.may_process()

    def _busy_locked(self, lane: Lane) -> bool:
        return bool(self._waiting[lane]) or lane in self._processing.values()

    def __len__(self) -> int:
        with self._lock:
            return len(self._queued) + len(self._processing)

    @property
    def alive(self) -> bool:
        return bool(self._threads) and all(thread.is_alive() for thread in self._threads)

    def waiting(self) -> dict[Lane, int]:
        """How many keys wait in each lane (not counting those being processed)."""
        with self._lock:
            return dict(zip(Lane, self._waiting, strict=True))

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
                        self._add_locked(key, Lane.URGENT)  # a deadline goes ahead of routine work (see _pop_locked)
                timeout = max(0.0, self._heap[0][0] - now) if self._heap else None
                self._scheduler_wakeup.wait(timeout)

    def _work_loop(self) -> None:
        while True:
            with self._lock:
                taken = None
                while not self._stopping and (self._paused or not self.may_process() or (taken := self._pop_locked()) is None):
                    self._lock.wait()
                if self._stopping or taken is None:
                    return
                key, lane = taken
                self._processing[key] = lane
            next_at = self._run(key)
            with self._lock:
                del self._processing[key]
                if next_at is not None:
                    self._schedule_locked(key, next_at)
                if key in self._dirty:
                    self._add_locked(key, self._dirty.pop(key))
                self._finished.notify_all()

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
