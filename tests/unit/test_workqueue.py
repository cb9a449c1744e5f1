"""The work queue's promises: one run per burst of adds, never two workers on one key, deadlines
on time, failures retried with backoff."""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from collections.abc import Iterator

from agent_identity.workqueue import Lane, WorkQueue


def run_until(predicate, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.005)
    raise AssertionError("condition not reached")


def test_a_burst_of_adds_for_one_key_runs_it_at_most_twice_and_never_concurrently() -> None:
    runs: Counter[str] = Counter()
    active: set[str] = set()
    overlaps = []
    gate = threading.Event()

    def process(key: str) -> None:
        if key in active:
            overlaps.append(key)
        active.add(key)
        gate.wait(1)
        runs[key] += 1
        active.discard(key)

    queue: WorkQueue[str] = WorkQueue(process, workers=4)
    queue.start()
    try:
        for _ in range(50):
            queue.add("a")
        run_until(lambda: "a" in active)
        for _ in range(50):
            queue.add("a")  # while it runs: marked dirty, runs once more afterwards
        gate.set()
        run_until(lambda: runs["a"] == 2 and not len(queue))
        time.sleep(0.05)
        assert runs["a"] == 2
        assert overlaps == []
    finally:
        queue.stop()


def test_deadlines_fire_in_order_and_a_later_answer_replaces_an_earlier_one() -> None:
    fired: list[tuple[str, float]] = []
    queue: WorkQueue[str] = WorkQueue(lambda key: fired.append((key, time.time())), workers=2)
    queue.start()
    try:
        start = time.time()
        queue.add_at("late", start + 0.20)
        queue.add_at("early", start + 0.05)
        queue.add_at("moved", start + 0.10)
        queue.add_at("moved", start + 0.30)  # replaces 0.10
        run_until(lambda: len(fired) == 3)
        time.sleep(0.1)
        assert [key for key, _ in fired] == ["early", "late", "moved"]
        lateness = [at - start - due for (_, at), due in zip(fired, (0.05, 0.20, 0.30), strict=True)]
        assert all(0 <= late < 0.1 for late in lateness), lateness
        assert queue.pending_deadlines == 0
    finally:
        queue.stop()


def test_the_returned_time_schedules_the_next_run() -> None:
    runs: list[float] = []

    def process(key: str) -> float | None:
        runs.append(time.time())
        return time.time() + 0.05 if len(runs) < 3 else None

    queue: WorkQueue[str] = WorkQueue(process, workers=1)
    queue.start()
    try:
        queue.add("k")
        run_until(lambda: len(runs) == 3)
        assert runs[2] - runs[0] >= 0.1
    finally:
        queue.stop()


def test_a_failing_key_is_retried_with_growing_delays_and_others_keep_flowing() -> None:
    attempts: list[float] = []
    done: list[str] = []

    def process(key: str) -> None:
        if key == "bad":
            attempts.append(time.time())
            if len(attempts) < 3:
                raise RuntimeError("API server said no")
        done.append(key)

    queue: WorkQueue[str] = WorkQueue(process, workers=1)
    queue.start()
    try:
        queue.add("bad")
        queue.add("good")
        run_until(lambda: "bad" in done, timeout=5)
        assert "good" in done
        first_gap, second_gap = attempts[1] - attempts[0], attempts[2] - attempts[1]
        assert 0.45 <= first_gap < 0.8 and 0.95 <= second_gap < 1.5, (first_gap, second_gap)
    finally:
        queue.stop()


def test_stop_returns_promptly() -> None:
    queue: WorkQueue[str] = WorkQueue(lambda key: None, workers=3)
    queue.start()
    queue.add_at("far", time.time() + 3600)
    started = time.monotonic()
    queue.stop()
    assert time.monotonic() - started < 1


@contextlib.contextmanager
def behind_a_blocker() -> Iterator[tuple[WorkQueue[str], list[str], threading.Event]]:
    """A one-worker queue busy with "blocker" until the event is set: keys added meanwhile wait,
    and ``order`` shows in which order they ran."""
    order: list[str] = []
    gate, started = threading.Event(), threading.Event()

    def process(key: str) -> None:
        if key == "blocker":
            started.set()
            gate.wait(2)
        order.append(key)

    queue: WorkQueue[str] = WorkQueue(process, workers=1)
    queue.start()
    try:
        queue.add("blocker")
        run_until(started.is_set)
        yield queue, order, gate
    finally:
        queue.stop()


def test_urgent_keys_and_due_deadlines_jump_the_queue() -> None:
    with behind_a_blocker() as (queue, order, gate):
        for key in ("a", "b", "c"):
            queue.add(key)
        queue.add("overdue", lane=Lane.URGENT)
        queue.add("c", lane=Lane.URGENT)  # already waiting: moved to the front
        queue.add_at("deadline", time.time())
        time.sleep(0.05)
        gate.set()
        run_until(lambda: len(order) == 6)
        assert order == ["blocker", "overdue", "c", "deadline", "a", "b"]  # urgent first, in arrival order


def test_background_keys_wait_for_routine_ones_and_move_up_when_something_changes() -> None:
    with behind_a_blocker() as (queue, order, gate):
        for key in ("verify-1", "verify-2", "verify-3"):
            queue.add(key, lane=Lane.BACKGROUND)
        queue.add("new")
        queue.add("verify-3")  # changed meanwhile: routine now, and processed once
        queue.add("verify-1", lane=Lane.BACKGROUND)  # already waiting: no second entry
        assert len(queue) == 5  # blocker + four waiting keys
        gate.set()
        run_until(lambda: len(order) == 5)
        time.sleep(0.05)
        assert order == ["blocker", "new", "verify-3", "verify-1", "verify-2"]
        assert len(queue) == 0
