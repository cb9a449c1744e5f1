"""Background loops never die of a failure, back off, and say when they are dead or stuck."""

from __future__ import annotations

import threading

import urllib3

from agent_identity.engine.supervisor import Supervised, dead


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_loop_survives_any_exception_backs_off_and_recovers() -> None:
    calls: list[int] = []
    recovered = threading.Event()

    def step() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise urllib3.exceptions.ProtocolError("connection reset")  # neither OSError nor KubeError
        if len(calls) == 2:
            raise RuntimeError("anything at all")
        recovered.set()

    loop = Supervised("flaky", step, every=0.0, stale_after=60, max_backoff=0.01).start()
    try:
        assert recovered.wait(5), "the loop died on an exception"
        assert loop.alive and loop.failures == 0 and loop.last_error == ""
    finally:
        loop.stop()


def test_a_failure_is_counted_and_named_and_the_loop_waits_before_retrying() -> None:
    stopped = threading.Event()

    def failing() -> None:
        stopped.set()
        raise ValueError("api server unreachable")

    loop = Supervised("down", failing, every=0.0, stale_after=60, max_backoff=30.0).start()
    try:
        assert stopped.wait(5)
        stopped.clear()
        assert not stopped.wait(0.5), "retried at once: no backoff after a failure"
        assert loop.failures == 1 and loop.last_error == "ValueError: api server unreachable"
    finally:
        loop.stop()


def test_a_stuck_or_dead_loop_is_reported() -> None:
    clock = Clock()
    release = threading.Event()
    entered = threading.Event()

    def stuck() -> None:
        entered.set()
        release.wait(5)

    loop = Supervised("watch-secret", stuck, every=0.0, stale_after=30, clock=clock).start()
    try:
        assert entered.wait(5)
        assert dead([loop]) == []
        clock.now += 31  # no heartbeat for longer than stale_after
        assert dead([loop]) == ["watch-secret"]
    finally:
        loop.stop()
        release.set()
    loop._thread.join(5)
    clock.now -= 31  # a fresh heartbeat, but the thread has ended: still dead
    assert dead([loop]) == ["watch-secret"]


def test_wake_runs_the_next_step_at_once() -> None:
    ran = threading.Semaphore(0)
    loop = Supervised("resync", ran.release, every=3600, first_after=3600, stale_after=7200).start()
    try:
        assert not ran.acquire(timeout=0.2)  # waits its first period
        loop.wake()
        assert ran.acquire(timeout=5)
    finally:
        loop.stop()
