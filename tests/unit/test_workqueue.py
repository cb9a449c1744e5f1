"""The work queue's promises: one run per burst of adds, never two workers on one key, deadlines
on time, failures retried with backoff, lanes served in order.

The queue runs its real threads on a ``FakeClock``: time moves only when a test advances it, and
``settle`` returns once the queue has done everything due, so no test sleeps or reads the wall
clock, and every time asserted is exact."""

from __future__ import annotations

import contextlib
import threading
from collections import Counter
from collections.abc import Callable, Iterator

from agent_identity.engine.workqueue import BACKOFF_BASE_S, URGENT_RUN, Lane, WorkQueue

from .fakeclock import SETTLE_TIMEOUT_S, FakeClock

WAIT_S = SETTLE_TIMEOUT_S  # how long a test waits for an event before calling the queue broken


@contextlib.contextmanager
def running(
    process: Callable[[str], float | None], clock: FakeClock, *, workers: int, name: str = "workqueue"
) -> Iterator[WorkQueue[str]]:
    """The queue started on ``clock``, its threads all waiting for work."""
    clock.threads = workers + 1
    queue: WorkQueue[str] = WorkQueue(process, workers=workers, clock=clock, condition=clock.condition, name=name)
    queue.start()
    try:
        clock.settle()
        yield queue
    finally:
        queue.stop(timeout=WAIT_S)


def test_a_burst_of_adds_for_one_key_runs_it_at_most_twice_and_never_concurrently() -> None:
    runs: Counter[str] = Counter()
    active: set[str] = set()
    overlaps: list[str] = []
    started, gate = threading.Event(), threading.Event()

    def process(key: str) -> None:
        if key in active:
            overlaps.append(key)
        active.add(key)
        started.set()
        gate.wait(WAIT_S)
        runs[key] += 1
        active.discard(key)

    clock = FakeClock()
    with running(process, clock, workers=4) as queue:
        for _ in range(50):
            queue.add("a")
        assert started.wait(WAIT_S)
        for _ in range(50):
            queue.add("a")  # while it runs: marked dirty, runs once more afterwards
        assert len(queue) == 1  # being processed, not queued a second time
        gate.set()
        clock.settle()
        assert runs["a"] == 2
        assert overlaps == []
        assert len(queue) == 0


def test_deadlines_fire_on_time_and_a_later_answer_replaces_an_earlier_one() -> None:
    clock = FakeClock()
    fired: list[tuple[str, float]] = []
    with running(lambda key: fired.append((key, clock())), clock, workers=2) as queue:
        start = clock()
        queue.add_at("late", start + 20)
        queue.add_at("early", start + 5)
        queue.add_at("moved", start + 10)
        queue.add_at("moved", start + 30)  # replaces +10
        clock.settle()
        assert fired == [] and queue.pending_deadlines == 3
        clock.advance(4)
        assert fired == []
        clock.advance(1)
        assert fired == [("early", start + 5)]
        clock.advance(5)
        assert fired == [("early", start + 5)]  # "moved" is no longer due at +10
        clock.advance(10)
        assert fired == [("early", start + 5), ("late", start + 20)]
        clock.advance(10)
        assert fired == [("early", start + 5), ("late", start + 20), ("moved", start + 30)]
        assert queue.pending_deadlines == 0


def test_deadlines_that_fall_due_together_run_earliest_first() -> None:
    clock = FakeClock()
    fired: list[str] = []
    with running(fired.append, clock, workers=1) as queue:
        start = clock()
        for key, due in (("third", 3), ("first", 1), ("fourth", 4), ("second", 2)):
            queue.add_at(key, start + due)
        clock.advance(10)
        assert fired == ["first", "second", "third", "fourth"]


def test_forget_drops_a_deadline() -> None:
    clock = FakeClock()
    fired: list[str] = []
    with running(fired.append, clock, workers=1) as queue:
        queue.add_at("gone", clock() + 5)
        queue.add_at("kept", clock() + 5)
        queue.forget("gone")
        assert queue.pending_deadlines == 1
        clock.advance(5)
        assert fired == ["kept"]


def test_the_returned_time_schedules_the_next_run() -> None:
    clock = FakeClock()
    runs: list[float] = []

    def process(key: str) -> float | None:
        runs.append(clock())
        return clock() + 5 if len(runs) < 3 else None

    with running(process, clock, workers=1) as queue:
        start = clock()
        queue.add("k")
        clock.settle()
        assert runs == [start] and queue.pending_deadlines == 1
        clock.advance(4)
        assert runs == [start]
        clock.advance(1)
        assert runs == [start, start + 5]
        clock.advance(5)
        assert runs == [start, start + 5, start + 10]
        clock.advance(100)  # the third run returned None: nothing more
        assert runs == [start, start + 5, start + 10] and queue.pending_deadlines == 0


def test_a_failing_key_is_retried_with_growing_delays_and_others_keep_flowing() -> None:
    clock = FakeClock()
    attempts: list[float] = []
    done: list[str] = []
    failures = [True, True, False, True, False]  # what each attempt at "bad" does

    def process(key: str) -> None:
        if key == "bad":
            attempts.append(clock())
            if failures.pop(0):
                raise RuntimeError("API server said no")
        done.append(key)

    with running(process, clock, workers=1) as queue:
        start = clock()
        queue.add("bad")
        queue.add("good")
        clock.settle()
        assert attempts == [start] and done == ["good"]  # "good" did not wait for the retry
        clock.advance(BACKOFF_BASE_S / 2)
        assert attempts == [start]
        clock.advance(BACKOFF_BASE_S / 2)
        assert attempts == [start, start + BACKOFF_BASE_S]  # failed again: the delay doubles
        clock.advance(BACKOFF_BASE_S * 1.5)
        assert len(attempts) == 2
        clock.advance(BACKOFF_BASE_S / 2)
        assert attempts == [start, start + BACKOFF_BASE_S, start + 3 * BACKOFF_BASE_S]
        assert done == ["good", "bad"]

        queue.add("bad")  # a success forgot the failures: the next one backs off from the start again
        clock.settle()
        assert len(attempts) == 4
        clock.advance(BACKOFF_BASE_S)
        assert len(attempts) == 5 and done == ["good", "bad", "bad"]
        assert queue.pending_deadlines == 0


def test_a_paused_queue_keeps_keys_and_deadlines_until_resumed() -> None:
    clock = FakeClock()
    done: list[str] = []
    with running(done.append, clock, workers=2) as queue:
        queue.pause()
        queue.add("changed")
        queue.add_at("due", clock() + 1)
        clock.advance(1)
        assert done == [] and len(queue) == 2
        queue.resume()
        clock.settle()
        assert sorted(done) == ["changed", "due"] and len(queue) == 0


def test_stop_wakes_every_thread() -> None:
    """The fake clock's waits never time out, so only stop() itself can end them."""
    clock = FakeClock()
    with running(lambda key: None, clock, workers=3, name="stopping") as queue:
        queue.add_at("far", clock() + 3600)
        clock.settle()
        queue.stop(timeout=WAIT_S)
        assert [thread.name for thread in threading.enumerate() if thread.name.startswith("stopping-")] == []
        assert not queue.alive


@contextlib.contextmanager
def behind_a_blocker() -> Iterator[tuple[WorkQueue[str], FakeClock, list[str], threading.Event]]:
    """A one-worker queue busy with "blocker" until the event is set: keys added meanwhile wait,
    and ``order`` shows in which order they ran."""
    clock = FakeClock()
    order: list[str] = []
    gate, started = threading.Event(), threading.Event()

    def process(key: str) -> None:
        if key == "blocker":
            started.set()
            gate.wait(WAIT_S)
        order.append(key)

    with running(process, clock, workers=1) as queue:
        queue.add("blocker")
        assert started.wait(WAIT_S)
        yield queue, clock, order, gate


def test_urgent_keys_and_due_deadlines_jump_the_queue() -> None:
    with behind_a_blocker() as (queue, clock, order, gate):
        for key in ("a", "b", "c"):
            queue.add(key)
        queue.add("overdue", lane=Lane.URGENT)
        queue.add("c", lane=Lane.URGENT)  # already waiting: moved to the front
        queue.add_at("deadline", clock())
        clock.settle(busy=1)  # the scheduler has queued "deadline"; the worker is still held
        assert len(queue) == 6  # blocker + five waiting keys
        gate.set()
        clock.settle()
        assert order == ["blocker", "overdue", "c", "deadline", "a", "b"]  # urgent first, in arrival order


def test_background_keys_wait_for_routine_ones_and_move_up_when_something_changes() -> None:
    with behind_a_blocker() as (queue, clock, order, gate):
        for key in ("verify-1", "verify-2", "verify-3"):
            queue.add(key, lane=Lane.BACKGROUND)
        queue.add("new")
        queue.add("verify-3")  # changed meanwhile: routine now, and processed once
        queue.add("verify-1", lane=Lane.BACKGROUND)  # already waiting: no second entry
        assert len(queue) == 5  # blocker + four waiting keys
        gate.set()
        clock.settle()
        assert order == ["blocker", "new", "verify-3", "verify-1", "verify-2"]
        assert len(queue) == 0


def test_put_moves_a_key_down_too_and_a_key_running_runs_again_after() -> None:
    """``add`` only ever moves a key up; ``put`` leaves it exactly where it is told (a standby
    sending what the leader has settled to the back), counted once in its new lane."""
    with behind_a_blocker() as (queue, clock, order, gate):
        queue.add("settled-since")
        queue.add("new")
        queue.put("settled-since", Lane.BACKGROUND)  # down: its routine entry is skipped
        queue.put("new", Lane.ROUTINE)  # where it is already: no second entry
        queue.put("blocker", Lane.BACKGROUND)  # running: again right after, as add has it
        assert len(queue) == 3 and queue.waiting() == {Lane.URGENT: 0, Lane.ROUTINE: 1, Lane.BACKLOG: 0, Lane.BACKGROUND: 1}
        gate.set()
        clock.settle()
        assert order == ["blocker", "new", "settled-since", "blocker"]
        assert len(queue) == 0


def test_a_held_lane_keeps_its_keys_until_every_holder_releases_it() -> None:
    with behind_a_blocker() as (queue, clock, order, gate):
        queue.hold(Lane.BACKGROUND)
        queue.hold(Lane.BACKGROUND)  # holds nest: two listings at once
        queue.add("verify", lane=Lane.BACKGROUND)
        queue.add("new")
        gate.set()
        clock.settle()
        assert order == ["blocker", "new"]  # the other lanes flow
        queue.release(Lane.BACKGROUND)
        clock.settle()
        assert order == ["blocker", "new"]  # one holder left
        queue.release(Lane.BACKGROUND)
        clock.settle()
        assert order == ["blocker", "new", "verify"]
        assert len(queue) == 0


def test_a_key_asked_for_while_it_runs_runs_again_in_the_best_lane_it_was_asked_for() -> None:
    """A deadline-hinted identity read while processed is queued again urgently when overdue:
    it must not wait behind routine work because it happened to be running."""
    with behind_a_blocker() as (queue, clock, order, gate):
        queue.add("routine")
        queue.add("blocker", lane=Lane.BACKGROUND)
        queue.add("blocker", lane=Lane.URGENT)
        gate.set()
        clock.settle()
        assert order == ["blocker", "blocker", "routine"]
        queue.hold(Lane.BACKGROUND)
        queue.add("verify")
        queue.add("blocker", lane=Lane.BACKGROUND)  # not running now: waits in its lane
        clock.settle()
        assert order == ["blocker", "blocker", "routine", "verify"]


def test_a_burst_of_deadlines_lets_one_routine_key_in_every_few() -> None:
    """A restart finds thousands of deadlines due: new identities are served meanwhile, at one
    key in URGENT_RUN + 1, and nothing is taken from the routine lane when it is empty."""
    with behind_a_blocker() as (queue, clock, order, gate):
        for key in ("new-1", "new-2"):
            queue.add(key)
        for n in range(1, 8):
            queue.add(f"due-{n}", lane=Lane.URGENT)
        gate.set()
        clock.settle()
        assert order == ["blocker", "due-1", "due-2", "due-3", "new-1", "due-4", "due-5", "due-6", "new-2", "due-7"]
        assert URGENT_RUN == 3


def test_what_changed_while_paused_takes_turns_with_what_changes_after_resuming() -> None:
    """A standby's take-over: the identities created while no replica led are late already; one
    created after it is served alongside them, not behind all of them, and deadlines due still
    go first at URGENT_RUN keys to one."""
    with behind_a_blocker() as (queue, clock, order, gate):
        queue.pause()
        for key in ("left-1", "left-2", "left-3", "left-4"):
            queue.add(key)
        queue.add("left-4", lane=Lane.URGENT)  # moved up before the take-over: stays urgent
        for n in range(1, 5):
            queue.add(f"due-{n}", lane=Lane.URGENT)
        queue.put("settled", Lane.BACKGROUND)
        queue.resume()
        assert queue.waiting() == {Lane.URGENT: 5, Lane.ROUTINE: 0, Lane.BACKLOG: 3, Lane.BACKGROUND: 1}
        for key in ("new-1", "new-2"):
            queue.add(key)
        queue.add("left-3")  # changed again after the take-over: routine, at the back
        gate.set()
        clock.settle()
        assert order == [
            "blocker",
            *("left-4", "due-1", "due-2"),
            "left-1",  # the blocker was routine: the backlog's turn
            "due-3",
            "due-4",
            "new-1",
            "left-2",
            "new-2",
            "left-3",
            "settled",
        ]


def test_work_outside_the_queue_waits_for_a_lane_to_clear_or_for_its_timeout() -> None:
    """What a listing does before each page: give way to deadlines due, for a while at most."""
    with behind_a_blocker() as (queue, clock, order, gate):
        assert queue.wait_until_clear(Lane.URGENT, timeout=5)  # only routine work: clear
        queue.add("due", lane=Lane.URGENT)  # waits behind the blocker
        answers: list[bool] = []
        clock.threads += 1  # the listing's thread waits on the queue's clock too
        waiter = threading.Thread(target=lambda: answers.append(queue.wait_until_clear(Lane.URGENT, timeout=5)))
        waiter.start()
        clock.settle(busy=1)
        assert answers == []
        clock.advance(4.9, busy=1)
        assert answers == []
        clock.threads -= 1  # the waiter returns in this advance
        clock.advance(0.1, busy=1)  # the blocker still holds the worker: given up on
        waiter.join(WAIT_S)
        assert answers == [False]

        clock.threads += 1
        waiter = threading.Thread(target=lambda: answers.append(queue.wait_until_clear(Lane.URGENT, timeout=5)))
        waiter.start()
        clock.settle(busy=1)
        gate.set()  # the blocker, then "due", run: the lane clears with no time passing
        waiter.join(WAIT_S)
        clock.threads -= 1
        clock.settle()
        assert answers == [False, True] and order == ["blocker", "due"]
        queue.pause()
        queue.add("later", lane=Lane.URGENT)
        assert queue.wait_until_clear(Lane.URGENT, timeout=5)  # a paused queue never clears: not waited for
