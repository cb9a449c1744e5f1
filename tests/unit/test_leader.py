"""Leader election on a fake Lease store and fake clocks: no API server, no sleeping.

Each replica has its own local clock (what it decides by) and its own wall clock (what it writes
into renewTime, skewed at will); the store keeps a resourceVersion and refuses a stale replace
with a 409, as the API server does.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
import urllib3

from agent_identity.engine.leader import EXIT_LEASE_LOST, LeaderElector, LeaseWatch, Timing
from agent_identity.engine.workqueue import WorkQueue
from agent_identity.kube.client import KubeError

LEASE = timedelta(seconds=15)  # client-go's defaults: renew deadline 10 s, retry period 2 s
EPOCH = datetime(2030, 1, 1, tzinfo=UTC)


class FakeLeases:
    """One Lease, with optimistic concurrency; ``failing`` makes every request raise it."""

    def __init__(self) -> None:
        self.lease: dict[str, Any] | None = None
        self.version = 0
        self.failing: Exception | None = None
        self.reads = 0
        self.writes: list[str] = []  # holderIdentity of each accepted write
        self.after_read: Callable[[], object] | None = None  # run once, after the next read

    def get_stored(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        assert (kind, namespace, name) == ("Lease", "ns", "lease")
        self.reads += 1
        if self.failing:
            raise self.failing
        lease = copy.deepcopy(self.lease)
        if self.after_read:
            hook, self.after_read = self.after_read, None
            hook()
        return lease

    def store(self, body: dict[str, Any]) -> dict[str, Any]:
        if self.failing:
            raise self.failing
        given = body["metadata"].get("resourceVersion")
        if (self.lease is None) != (given is None) or (self.lease and given != self.lease["metadata"]["resourceVersion"]):
            raise KubeError(method="PUT", path="/lease", status=409, reason="Conflict", message="stale")
        self.version += 1
        self.lease = copy.deepcopy(body)
        self.lease["metadata"]["resourceVersion"] = str(self.version)
        self.writes.append(body["spec"]["holderIdentity"])
        return copy.deepcopy(self.lease)

    @property
    def spec(self) -> dict[str, Any]:
        assert self.lease is not None
        return dict(self.lease["spec"])


class Replica:
    """An elector with its own clocks, recording its callbacks and exit."""

    def __init__(self, name: str, leases: FakeLeases, *, skew: timedelta = timedelta(0), warm: bool = True) -> None:
        self.now = 1000.0  # local clock: any origin, only differences matter
        self.skew = skew
        self.warm = warm  # whether its cache is full
        self.events: list[str] = []
        self.exits: list[int] = []
        self.elector = LeaderElector(
            leases,
            namespace="ns",
            name="lease",
            identity=name,
            lease_duration=LEASE,
            on_started_leading=lambda: self.events.append("started"),
            on_stopped_leading=lambda: self.events.append("stopped"),
            wall_clock=lambda: EPOCH + self.skew + timedelta(seconds=self.now),
            warm=lambda: self.warm,
            local_clock=lambda: self.now,
            exit_with=self.exits.append,
        )

    def at(self, now: float) -> Replica:
        self.now = now
        return self

    def step(self) -> float:
        return self.elector.step()

    @property
    def leading(self) -> bool:
        return self.elector.leading


def test_timing_is_client_go_s_scaled_to_the_lease() -> None:
    assert Timing.scaled(timedelta(seconds=15)) == Timing(15, 10, 2)
    assert Timing.scaled(timedelta(seconds=5)) == Timing(5, 10 / 3, 2 / 3)
    with pytest.raises(ValueError, match="renew deadline"):
        Timing(10, 10, 2)


def test_the_first_replica_creates_the_lease_and_leads() -> None:
    leases = FakeLeases()
    a = Replica("a", leases)
    assert a.step() == 2
    assert a.leading and a.elector.holds() and a.events == ["started"]
    spec = leases.spec
    assert spec["holderIdentity"] == "a" and spec["leaseDurationSeconds"] == 15 and spec["leaseTransitions"] == 0
    assert spec["acquireTime"] == spec["renewTime"]


def test_the_leader_renews_keeping_its_acquire_time() -> None:
    leases = FakeLeases()
    a = Replica("a", leases)
    a.at(1000).step()
    acquired = leases.spec["acquireTime"]
    for now in (1002, 1004, 1006, 1008, 1010, 1012):
        a.at(now).step()
        assert a.elector.check_deadline() > 0 and a.elector.holds()
    assert leases.writes == ["a"] * 7
    assert leases.spec["acquireTime"] == acquired and leases.spec["renewTime"] > acquired
    assert leases.spec["leaseTransitions"] == 0
    assert a.events == ["started"] and a.exits == []


def test_a_standby_sees_the_holder_and_waits() -> None:
    leases = FakeLeases()
    a, b = Replica("a", leases), Replica("b", leases)
    a.at(1000).step()
    for now in (1000, 1002, 1004, 1006):
        a.at(now).step()
        b.at(now + 0.5).step()
        assert not b.leading and not b.elector.holds()
    assert b.elector.observed is not None and b.elector.observed["spec"]["holderIdentity"] == "a"
    assert leases.writes == ["a"] * 5 and b.events == [] and b.exits == []


@pytest.mark.parametrize("skew", [timedelta(hours=1), timedelta(hours=-1)], ids=["holder-clock-ahead", "holder-clock-behind"])
def test_takeover_only_after_a_lease_duration_of_locally_observed_staleness(skew: timedelta) -> None:
    """The holder's renewTime, an hour ahead or behind, is never compared with the standby's clock."""
    leases = FakeLeases()
    a, b = Replica("a", leases, skew=skew), Replica("b", leases)
    b.now = 50_000.0  # the two local clocks share no origin either
    a.at(1000).step()
    a.at(1002).step()  # its last renewal
    b.at(50_000).step()  # b observes that record now: it is stale for b from here
    b.at(50_014.9).step()
    assert not b.leading and leases.writes == ["a", "a"]
    b.at(50_015).step()
    assert b.leading and b.events == ["started"]
    assert leases.spec["holderIdentity"] == "b" and leases.spec["leaseTransitions"] == 1
    assert leases.spec["acquireTime"] == leases.spec["renewTime"]


def test_each_change_of_the_record_restarts_the_standby_s_count() -> None:
    leases = FakeLeases()
    a, b = Replica("a", leases), Replica("b", leases)
    a.at(1000).step()
    b.at(1001).step()
    a.at(1008).step()  # renewed: a different record (and resourceVersion)
    b.at(1012).step()  # seen changed at 1012
    b.at(1026.9).step()  # 16.9 s after the first sight, 14.9 s after the change
    assert not b.leading
    b.at(1027).step()
    assert b.leading


def test_a_standby_looks_again_the_moment_the_lease_runs_out_not_a_retry_period_later() -> None:
    leases = FakeLeases()
    a, b = Replica("a", leases), Replica("b", leases)
    a.at(1000).step()
    assert b.at(1001).step() == 2  # 15 s to go: the retry period
    assert b.at(1014.5).step() == pytest.approx(1.5)  # not 2: the lease runs out at 1016 as b saw it
    assert not b.leading
    b.at(1016).step()
    assert b.leading


def test_a_renewal_the_watch_delivers_counts_from_its_arrival_not_from_the_next_read() -> None:
    """After a crash the standby takes over a lease duration after the last renewal it was told
    of, however its own reads fell; the same record seen again (read or redelivered) changes
    nothing, so the count never restarts later, nor earlier."""
    leases = FakeLeases()
    a, b = Replica("a", leases), Replica("b", leases)
    watch = LeaseWatch(SimpleNamespace(), b.elector)  # type: ignore[arg-type]
    a.at(1000).step()
    b.at(1000.5).step()
    a.at(1001.9).step()  # the last renewal before a crashes
    assert leases.lease is not None
    b.now = 1002.0
    watch.deliver("MODIFIED", copy.deepcopy(leases.lease))  # arrives at 1002
    b.at(1003.8).step()  # b's own read finds the record it already has
    b.now = 1004.0
    watch.deliver("MODIFIED", copy.deepcopy(leases.lease))
    b.at(1016.9).step()
    assert not b.leading
    b.at(1017).step()  # 15 s after the renewal arrived (read at 1003.8 alone, 1018.8)
    assert b.leading and leases.writes == ["a", "a", "b"]


def test_a_slow_answer_counts_from_when_it_arrived() -> None:
    """A read that hung 10 s (the API server frozen) shows a record as of its answer, not its request."""
    leases = FakeLeases()
    a, b = Replica("a", leases), Replica("b", leases)
    a.at(1000).step()
    leases.after_read = lambda: b.at(1010)
    b.at(1000).step()
    b.at(1024.9).step()
    assert not b.leading
    b.at(1025).step()
    assert b.leading


def test_the_leader_that_cannot_renew_stops_at_the_renew_deadline_and_exits() -> None:
    leases = FakeLeases()
    a = Replica("a", leases)
    a.at(1000).step()
    leases.failing = urllib3.exceptions.ProtocolError("Connection aborted.", ConnectionResetError(104, "reset"))
    for now in (1002, 1004, 1006, 1008):
        a.at(now).step()  # the API server is gone: every error is retried, the elector survives
        assert a.leading and a.elector.holds() and a.exits == []
    a.at(1009.9)
    assert a.elector.check_deadline() == pytest.approx(0.1)
    a.at(1010)
    assert not a.elector.holds()  # the work queue stops taking keys at once, before any thread runs
    a.elector.check_deadline()  # the watchdog, even while the elector thread is stuck in a request
    assert not a.leading and a.events == ["started", "stopped"] and a.exits == [EXIT_LEASE_LOST]
    a.at(1011).step()
    assert a.exits == [EXIT_LEASE_LOST]  # once


def test_a_leader_thawed_after_its_deadline_stops_without_a_request() -> None:
    """SIGSTOP past the lease, then SIGCONT: it must not read, let alone write, before stopping."""
    leases = FakeLeases()
    a = Replica("a", leases)
    a.at(1000).step()
    reads = leases.reads
    a.at(1060).step()
    assert leases.reads == reads and leases.writes == ["a"]
    assert a.events == ["started", "stopped"] and a.exits == [EXIT_LEASE_LOST]


def test_a_leader_that_sees_another_holder_stops_at_once() -> None:
    leases = FakeLeases()
    a, b = Replica("a", leases), Replica("b", leases)
    a.at(1000).step()
    b.at(1000).step()
    b.at(1015).step()  # a's lease expired as b saw it (a was frozen, say): b takes it
    assert b.leading
    a.at(1001).step()  # a's clock says it is within its deadline, but the lease says otherwise
    assert not a.leading and a.exits == [EXIT_LEASE_LOST] and leases.writes == ["a", "b"]


def test_of_two_standbys_racing_for_an_expired_lease_one_wins() -> None:
    leases = FakeLeases()
    a, b, c = Replica("a", leases), Replica("b", leases), Replica("c", leases)
    a.at(1000).step()
    b.at(1000).step()
    c.at(1000).step()
    leases.after_read = lambda: b.at(1015).step()  # b writes between c's read and c's write
    c.at(1015).step()
    assert b.leading and not c.leading and leases.writes == ["a", "b"]
    assert c.events == [] and c.exits == []


def test_a_standby_that_never_led_never_exits() -> None:
    leases = FakeLeases()
    b = Replica("b", leases)
    leases.failing = RuntimeError("anything at all")
    for now in range(1000, 1100, 2):
        b.at(now).step()
        b.elector.check_deadline()
    assert not b.leading and b.events == [] and b.exits == []
    leases.failing = None
    b.at(1100).step()
    assert b.leading  # no lease at all: it creates one


def test_a_callback_that_raises_does_not_end_the_election() -> None:
    leases = FakeLeases()
    a = Replica("a", leases)

    def broken() -> None:
        raise RuntimeError("boom")

    a.elector.on_started = broken
    a.elector.on_stopped = broken
    a.at(1000).step()
    assert a.leading
    a.at(1020).step()
    assert a.exits == [EXIT_LEASE_LOST]  # exits even though on_stopped_leading raised


def test_a_read_that_ends_past_the_deadline_is_not_followed_by_a_write() -> None:
    leases = FakeLeases()
    a = Replica("a", leases)
    a.at(1000).step()
    leases.after_read = lambda: a.at(1010.5)  # frozen, or a slow answer, between the read and the write
    a.at(1009).step()
    assert leases.writes == ["a"]
    a.elector.check_deadline()
    assert a.exits == [EXIT_LEASE_LOST]


def test_the_work_queue_takes_no_key_while_the_elector_does_not_hold_the_lease() -> None:
    """The queue asks before each key; a refusal leaves the key queued (threads, but no sleeps)."""
    asked, done = threading.Event(), threading.Event()
    allowed = False
    processed: list[str] = []

    def may_process() -> bool:
        asked.set()
        return allowed

    def process(key: str) -> None:
        processed.append(key)
        done.set()

    queue: WorkQueue[str] = WorkQueue(process, workers=1)
    queue.may_process = may_process
    queue.start()
    try:
        asked.wait(5)
        asked.clear()
        queue.add("identity")  # wakes the worker, which asks again and is refused
        assert asked.wait(5)
        assert processed == [] and len(queue) == 1
        allowed = True
        queue.resume()  # what on_started_leading does
        assert done.wait(5)
        assert processed == ["identity"]
    finally:
        queue.stop()


def test_a_leader_that_stops_releases_the_lease_and_a_standby_takes_it_at_its_next_retry() -> None:
    leases = FakeLeases()
    a, b = Replica("a", leases), Replica("b", leases)
    a.at(1000).step()
    b.at(1000.5).step()
    a.at(1002).elector.stop()  # SIGTERM in a rolling update
    assert not a.elector.holds() and leases.spec["holderIdentity"] == "" and a.exits == []
    b.at(1002.5).step()  # one retry period later, not a lease duration
    assert b.leading and leases.spec["holderIdentity"] == "b" and leases.spec["leaseTransitions"] == 1


def test_a_stopping_replica_never_empties_a_lease_someone_else_holds() -> None:
    leases = FakeLeases()
    a, b = Replica("a", leases), Replica("b", leases)
    a.at(1000).step()
    b.at(1000).step()
    b.at(1015).step()  # a stopped renewing: b took over
    assert leases.spec["holderIdentity"] == "b"
    a.elector.stop()  # a learns nothing, and thinks it leads
    assert leases.spec["holderIdentity"] == "b" and leases.writes == ["a", "b"]
    c = Replica("c", leases)
    c.at(1016).step()
    c.elector.stop()  # a standby writes nothing
    assert leases.writes == ["a", "b"]
    b.elector.stop()  # the holder releases
    assert leases.spec["holderIdentity"] == ""


def test_a_released_lease_goes_to_the_warm_standby_even_when_a_cold_replica_looks_first() -> None:
    """A rolling update: the new pod, its cache still filling, sees the old leader's release first."""
    leases = FakeLeases()
    a, warm, cold = Replica("a", leases), Replica("warm", leases), Replica("cold", leases, warm=False)
    a.at(1000).step()
    cold.at(1000.0).step()
    warm.at(1001.99).step()  # the warm standby polls a whole retry period out of step
    a.at(1002).elector.stop()
    cold.at(1002.0).step()  # free, but it leaves it to a warm standby
    cold.at(1004.0).step()
    assert not cold.leading and leases.writes == ["a", ""]
    warm.at(1003.99).step()
    assert warm.leading and leases.spec["holderIdentity"] == "warm"
    cold.at(1006.0).step()
    assert not cold.leading and cold.events == [] and leases.writes == ["a", "", "warm"]


def test_an_expired_lease_goes_to_the_warm_standby_first() -> None:
    """A crash: the cold replica saw the holder's last renewal first, and polls first."""
    leases = FakeLeases()
    a, warm, cold = Replica("a", leases), Replica("warm", leases), Replica("cold", leases, warm=False)
    a.at(1000).step()  # its last renewal, then it crashes
    cold.at(1000.0).step()
    warm.at(1001.99).step()
    for now in (1016.0, 1018.0):  # expired for the cold replica since 1015.0
        cold.at(now).step()
        assert not cold.leading
    warm.at(1017.99).step()  # expired for the warm one since 1016.99
    assert warm.leading and leases.writes == ["a", "warm"]


def test_a_cold_replica_alone_takes_the_lease_two_retry_periods_later() -> None:
    leases = FakeLeases()
    a, cold = Replica("a", leases), Replica("cold", leases, warm=False)
    a.at(1000).step()
    cold.at(1000.5).step()
    a.at(1002).elector.stop()
    for now in (1002.5, 1004.5, 1006.4):
        cold.at(now).step()
        assert not cold.leading
    cold.at(1006.5).step()  # 4 s after it saw the release
    assert cold.leading and leases.spec["holderIdentity"] == "cold" and cold.events == ["started"]


def test_a_cold_replica_renews_the_lease_it_holds() -> None:
    """Deferring is for taking a free lease: a leader whose cache is not full yet (the listing
    runs again after a watch gap, or it led from the start) keeps leading."""
    leases = FakeLeases()
    a = Replica("a", leases, warm=False)
    a.at(1000).step()  # the first replica creates the lease: nobody to defer to
    assert a.leading
    for now in (1002, 1004, 1006):
        a.at(now).step()
    assert a.leading and leases.writes == ["a"] * 4 and a.exits == []


def test_another_leads_while_its_lease_runs_as_this_replica_observed_it() -> None:
    """What holds a cold standby back from being ready (app/startup.py)."""
    leases = FakeLeases()
    a, b = Replica("a", leases), Replica("b", leases)
    assert not b.elector.another_leads()  # nothing observed yet
    a.at(1000).step()
    b.at(1001).step()
    assert b.elector.another_leads() and not a.elector.another_leads()
    b.at(1015.9)
    assert b.elector.another_leads()
    b.at(1016)  # a has not renewed for a lease duration as b saw it
    assert not b.elector.another_leads()
    a.at(1002).elector.stop()
    b.at(1003).step()  # b takes the released lease
    assert b.leading and not b.elector.another_leads()


def test_the_lease_watch_wakes_the_elector_when_the_lease_is_released_or_deleted() -> None:
    """A rolling update hands over in one watch event, not a retry period: only a nudge, the
    elector then reads the Lease itself."""
    leases = FakeLeases()
    standby = Replica("b", leases)
    watch = LeaseWatch(SimpleNamespace(), standby.elector)  # type: ignore[arg-type]
    assert watch.name == "watch-lease-lease"

    def woken() -> bool:
        was = standby.elector._wake.is_set()
        standby.elector._wake.clear()
        return was

    renewal = {"metadata": {"resourceVersion": "7"}, "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15}}
    watch.deliver("MODIFIED", renewal)
    assert not woken()  # a renewal: observed (below), nothing to do before the lease runs out
    assert standby.elector.observed == renewal and standby.elector.another_leads()
    watch.deliver("MODIFIED", {"spec": {"holderIdentity": "", "leaseDurationSeconds": 1}})
    assert woken()
    watch.deliver("DELETED", {"spec": {"holderIdentity": "a"}})
    assert woken()
    watch.on_gap()  # whatever the gap hid, the elector looks now
    assert woken()


def test_a_woken_elector_runs_its_next_round_at_once() -> None:
    leases = FakeLeases()
    rounds = threading.Semaphore(0)
    replica = Replica("a", leases)

    def step() -> float:
        rounds.release()
        return 3600.0

    replica.elector.step = step  # type: ignore[method-assign]
    replica.elector.start()
    try:
        assert rounds.acquire(timeout=5)  # the first round, then an hour's wait
        replica.elector.wake()
        assert rounds.acquire(timeout=5)  # the next one at once
    finally:
        replica.elector._stop.set()
        replica.elector.wake()
