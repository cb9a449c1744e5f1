"""Active/standby replicas on a coordination.k8s.io Lease, with client-go's leader-election
semantics. Every replica watches and keeps its cache and deadlines warm; only the lease holder
reconciles.

- Timing: lease duration L, renew deadline 2/3 L, retry period 2/15 L (client-go's 15 s, 10 s and
  2 s, scaled with ``--lease-duration``, 8 s by default: a crash is taken over within 10 s).
- Expiry is judged on this replica's own clock only: it keeps the last lease record it read and
  the local monotonic time at which it saw that record change (client-go's ``observedTime``). A
  standby takes over once the record has not changed for the holder's ``leaseDurationSeconds``
  as it observed it, whatever ``renewTime`` the holder's clock wrote (a skewed clock, ahead or
  behind, changes nothing). A standby observes each renewal as the Lease watch delivers it and
  looks again the moment the lease would run out: a crashed leader is replaced a lease duration
  after its last renewal, not up to two retry periods later (one to see it, one to act).
- The leader holds the lease until ``renew deadline`` after the start of its last successful
  renewal. A write is accepted only after that start, so every other replica observes it later
  and cannot take over before ``start + L``: the leader stops acting at ``start + 2/3 L``, with a
  third of the lease to spare. :meth:`LeaderElector.holds` is that local, network-free test; the
  work queue asks it before every key, so a leader frozen (SIGSTOP, a long GC pause) and thawed
  after a takeover takes no further key even before its elector thread has run again.
- A leader that stops (SIGTERM: a rolling update, a drained node) releases the lease, as client-go
  does with ReleaseOnCancel: the holder is emptied, and a standby, which watches the Lease
  (:class:`LeaseWatch`), takes it at once rather than at its next retry (up to 2 s later).
- Warm standbys first: a replica whose cache is still filling (a new pod of a rolling update, at
  100,000 identities for up to a minute) leaves a lease that has just become free to the others
  for two retry periods more, so a standby with a full cache takes over whenever there is one
  (a lease that ran out is seen by each replica at its own poll, up to a retry period out of
  step, and tried again a retry period later). A cold replica alone takes over two retry periods
  later.
- Losing the lease (the deadline passed without a renewal, or another holder seen) pauses the
  work queue and exits the process, as controller-runtime does: the pod restarts as a standby
  with a fresh cache, and nothing written after the loss can come from this process. A standby
  that never led never exits. The elector never dies: any exception is logged and retried.

Why an elector of our own: docs/design/0008-own-leader-election.md.
"""

from __future__ import annotations

import copy
import enum
import logging
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from agent_identity.engine.watch import Watch
from agent_identity.kube.client import Kube, KubeError

log = logging.getLogger(__name__)

EXIT_LEASE_LOST = 1


class LeaseStore(Protocol):
    """What the elector needs of :class:`~agent_identity.kube.client.Kube` (a fake in the unit tests)."""

    def get_stored(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None: ...

    def store(self, body: dict[str, Any]) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Timing:
    lease_duration: float
    renew_deadline: float
    retry_period: float

    def __post_init__(self) -> None:
        if not self.lease_duration > self.renew_deadline > self.retry_period > 0:
            raise ValueError(f"leader election needs lease duration > renew deadline > retry period > 0: {self}")

    @classmethod
    def scaled(cls, lease_duration: timedelta) -> Timing:
        """client-go's defaults (15 s, 10 s, 2 s) in proportion to ``lease_duration``."""
        seconds = lease_duration.total_seconds()
        return cls(lease_duration=seconds, renew_deadline=seconds * 2 / 3, retry_period=seconds * 2 / 15)


def local_clock() -> float:
    """Seconds on a clock that never steps, and keeps counting while the machine is suspended
    (CLOCK_BOOTTIME): a replica suspended past its lease must know it when it wakes up."""
    return time.clock_gettime(time.CLOCK_BOOTTIME) if hasattr(time, "CLOCK_BOOTTIME") else time.monotonic()


def exit_process(code: int) -> None:
    """Ends the process now, from any thread, running nothing else (no clean-up that could write)."""
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _record(lease: dict[str, Any]) -> tuple[Any, Any]:
    return (lease.get("metadata") or {}).get("resourceVersion"), lease.get("spec") or {}


def _micro(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class _Outcome(enum.Enum):
    HELD = "held"  # we wrote the lease: acquired or renewed
    OTHER = "other"  # another replica holds a lease that has not expired (as we observed it)
    FAILED = "failed"  # no answer, a conflict, or not written: try again
    DEFERRED = "deferred"  # free, but left to a replica with a full cache for a while


class LeaderElector:
    def __init__(
        self,
        store: LeaseStore,
        *,
        namespace: str,
        name: str,
        identity: str,
        lease_duration: timedelta,
        on_started_leading: Callable[[], None],
        on_stopped_leading: Callable[[], None],
        wall_clock: Callable[[], datetime],
        warm: Callable[[], bool] = lambda: True,
        local_clock: Callable[[], float] = local_clock,
        exit_with: Callable[[int], None] = exit_process,
    ) -> None:
        """``identity`` must be unique among the replicas (hostname-pid and a random part: two
        pods on one node with host networking can share the first two). ``lease_duration`` sets the
        timing (:meth:`Timing.scaled`). ``wall_clock`` only fills renewTime and acquireTime (for
        people reading the Lease); every decision uses ``local_clock``. ``warm``: whether this
        replica's cache is full (a cold one defers a free lease, see above). ``exit_with`` ends the
        process when the lease is lost (the unit tests record the call instead)."""
        self.store, self.namespace, self.name, self.identity = store, namespace, name, identity
        self.timing = Timing.scaled(lease_duration)
        self.on_started, self.on_stopped = on_started_leading, on_stopped_leading
        self._wall, self._warm, self._now, self._exit = wall_clock, warm, local_clock, exit_with
        self.leading = False
        self._renewed_at = -math.inf  # local start of the last successful acquire or renew
        self.observed: dict[str, Any] | None = None  # the last Lease read or written
        self._observed_at = -math.inf  # local time at which the observed record last changed
        self._followed: str | None = None  # the holder last reported, while standing by
        self._lock = threading.Lock()  # leadership changes, from the elector and the watchdog threads
        self._observing = threading.Lock()  # the observed record, from the elector and the watch threads
        self._stop = threading.Event()
        self._wake = threading.Event()  # set: the next round now, not after the retry period

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        threading.Thread(target=self._run, name="leader-election", daemon=True).start()
        threading.Thread(target=self._watchdog, name="leader-election-watchdog", daemon=True).start()

    def stop(self) -> None:
        """Stops electing and, when leading, releases the lease (client-go's ReleaseOnCancel): a
        standby watching the Lease takes over at once, instead of waiting out the lease after
        every rolling update. Call it once this process writes nothing more."""
        self._stop.set()
        self._wake.set()
        with self._lock:
            leading, self.leading = self.leading, False  # holds() is False from here: nothing more is written
        if leading:
            self.release()

    def release(self) -> bool:
        """Empties the holder of the lease if it is still ours (at the resourceVersion read, so a
        newer holder is never overwritten); whether it was released. Best effort: a lease not
        released simply expires."""
        try:
            lease = self.store.get_stored("Lease", self.namespace, self.name)
            if lease is None or (lease.get("spec") or {}).get("holderIdentity") != self.identity:
                return False
            lease["spec"] = {**lease["spec"], "holderIdentity": "", "leaseDurationSeconds": 1, "renewTime": _micro(self._wall())}
            self.store.store(lease)
        except Exception as error:  # noqa: BLE001 - stopping anyway: the lease then expires on its own
            log.warning("leader election: could not release the lease %s/%s: %s", self.namespace, self.name, error)
            return False
        log.info("leader election: %s released the lease %s/%s", self.identity, self.namespace, self.name)
        return True

    def another_leads(self) -> bool:
        """Whether, as last observed, another replica holds a lease that has not run out."""
        spec = (self.observed or {}).get("spec") or {}
        holder = spec.get("holderIdentity")
        return bool(holder) and holder != self.identity and self._now() < self._free_since(spec)

    def holds(self) -> bool:
        """True while this replica may act: it leads and its last renewal is within the renew
        deadline. Local and lock-free (the work queue asks it under its own lock)."""
        return self.leading and self._now() < self._renewed_at + self.timing.renew_deadline

    def wake(self) -> None:
        """Run the next round now (the lease was released or deleted: a standby takes it at once)."""
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                delay = self.step()
            except Exception:  # step catches everything: this is the last resort
                log.exception("leader election: unexpected error")
                delay = self.timing.retry_period
            self._wake.wait(delay)
            self._wake.clear()

    def _watchdog(self) -> None:
        """Ends leadership at the renew deadline even while the elector thread is stuck in a request."""
        while not self._stop.is_set():
            try:
                delay = self.check_deadline()
            except Exception:  # the watchdog must outlive anything
                log.exception("leader election: unexpected error in the watchdog")
                delay = self.timing.retry_period
            self._stop.wait(delay)

    # -- one round (the unit tests drive these with a fake clock) ----------------------------------

    def check_deadline(self) -> float:
        """Stops leading if the renew deadline has passed; returns the seconds until it is due."""
        if not self.leading:
            return self.timing.retry_period
        remaining = self._renewed_at + self.timing.renew_deadline - self._now()
        if remaining <= 0:
            self._lose(self._overdue())
            return self.timing.retry_period
        return min(remaining, self.timing.retry_period)

    def step(self) -> float:
        """One attempt to acquire or renew the lease; returns the seconds to wait before the next."""
        started = self._now()
        if self.leading and not self.holds():
            self._lose(self._overdue())
            return self.timing.retry_period
        try:
            outcome = self._try_acquire_or_renew()
        except Exception as error:  # noqa: BLE001 - an unreachable or failing API server is retried, never fatal
            log.warning("leader election: %s: %s", type(error).__name__, error)
            outcome = _Outcome.FAILED
        if outcome is _Outcome.HELD:
            self._held(started)
        elif outcome is _Outcome.OTHER:
            spec = (self.observed or {}).get("spec") or {}
            holder = spec.get("holderIdentity")
            if self.leading:
                self._lose(f"{holder} holds it now")
                return self.timing.retry_period
            if holder != self._followed:
                self._followed = holder
                log.info("leader election: %s holds the lease %s/%s: standing by", holder, self.namespace, self.name)
            # Look again the moment the lease runs out as observed, not up to a retry period later.
            return min(self.timing.retry_period, max(self._free_since(spec) - self._now(), 0.0))
        elif outcome is _Outcome.DEFERRED and self._followed != "":
            self._followed = ""
            log.info(
                "leader election: the lease %s/%s is free; this replica's cache is still filling, so a warm standby "
                "may take it first (%.1fs)",
                self.namespace,
                self.name,
                2 * self.timing.retry_period,
            )
        return self.timing.retry_period

    def _overdue(self) -> str:
        since = self._now() - self._renewed_at
        return f"last renewed {since:.1f}s ago, past the renew deadline of {self.timing.renew_deadline:.1f}s"

    def _held(self, started: float) -> None:
        with self._lock:
            self._renewed_at = started
            if self.leading:
                return
            self.leading = True
        log.info("leader election: %s acquired the lease %s/%s: leading", self.identity, self.namespace, self.name)
        try:
            self.on_started()
        except Exception:  # the elector outlives its callbacks
            log.exception("leader election: on_started_leading failed")

    def _lose(self, why: str) -> None:
        with self._lock:
            if not self.leading:
                return
            self.leading = False
        log.error(
            "leader election: lost the lease %s/%s (%s): stopping work and exiting with code %d, so that nothing is "
            "written without the lease; the restarted process joins as a standby",
            self.namespace,
            self.name,
            why,
            EXIT_LEASE_LOST,
        )
        try:
            self.on_stopped()
        except Exception:  # exit regardless
            log.exception("leader election: on_stopped_leading failed")
        self._exit(EXIT_LEASE_LOST)

    # -- the Lease ------------------------------------------------------------------------------

    def saw(self, lease: dict[str, Any]) -> None:
        """A record the Lease watch delivered, observed now: a standby's count starts at the
        holder's renewal, not at its own next read up to a retry period later (after a crash the
        lease is taken that much sooner). Observing late is always safe, never early: the record
        was written before the event arrived."""
        self._observe(lease, self._now())

    def _observe(self, lease: dict[str, Any], now: float) -> None:
        """Remembers the record and when it changed; any write changes the resourceVersion. (From
        the elector's thread and the watch's: a record seen twice out of order only counts from
        later, the safe side.)"""
        with self._observing:
            if self.observed is None or _record(lease) != _record(self.observed):
                self.observed = copy.deepcopy(lease)
                self._observed_at = now

    def _free_since(self, spec: dict[str, Any]) -> float:
        """Local time from which the observed lease is free for us: when we saw it released (no
        holder), or when the holder's lease ran out since we saw its record change."""
        if not spec.get("holderIdentity"):
            return self._observed_at
        return self._observed_at + float(spec.get("leaseDurationSeconds") or self.timing.lease_duration)

    def _try_acquire_or_renew(self) -> _Outcome:
        """Times of observation are taken after each answer, never before the request: a slow
        answer must not make the record look older than it is."""
        wall = _micro(self._wall())
        record = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": math.ceil(self.timing.lease_duration),  # never shorter than ours
            "acquireTime": wall,
            "renewTime": wall,
            "leaseTransitions": 0,
        }
        lease = self.store.get_stored("Lease", self.namespace, self.name)
        if lease is None:
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": record,
            }
            return self._write(body)
        now = self._now()
        self._observe(lease, now)
        current = lease.get("spec") or {}
        holder = current.get("holderIdentity") or ""
        if holder != self.identity:
            free_since = self._free_since(current)
            if now < free_since:
                return _Outcome.OTHER
            if not self.leading and now < free_since + 2 * self.timing.retry_period and not self._warm():
                return _Outcome.DEFERRED
        if holder == self.identity:
            record["acquireTime"] = current.get("acquireTime") or wall
            record["leaseTransitions"] = int(current.get("leaseTransitions") or 0)
        else:
            record["leaseTransitions"] = int(current.get("leaseTransitions") or 0) + 1
        lease["spec"] = record
        return self._write(lease)

    def _write(self, body: dict[str, Any]) -> _Outcome:
        if self.leading and not self.holds():  # the read took us past the deadline: never write then
            return _Outcome.FAILED
        try:
            written = self.store.store(body)  # replaced only at the resourceVersion read: else 409
        except KubeError as error:
            if error.conflict:  # another replica wrote first
                log.info("leader election: another replica wrote the lease first")
                return _Outcome.FAILED
            raise
        self._observe(written, self._now())
        return _Outcome.HELD


class LeaseWatch(Watch):
    """Watches the Lease and wakes the elector when it is released or deleted, so a rolling
    update hands over in the time of one watch event, not of a retry period; each renewal it
    delivers is observed when it arrives (:meth:`LeaderElector.saw`), so after a crash the lease
    runs out as observed a lease duration after the holder's last renewal, not up to a retry
    period later. The elector still reads the Lease itself before any write, and decides by it."""

    def __init__(self, kube: Kube, elector: LeaderElector, *, timeout_s: int = 300) -> None:
        self.kube, self.elector, self.timeout_s = kube, elector, timeout_s
        self.on_gap = elector.wake  # whatever happened in the gap, the elector reads the Lease now

    @property
    def name(self) -> str:
        return f"watch-lease-{self.elector.name}"

    def current_version(self) -> str:
        return self.kube.stored_version("Lease", self.elector.namespace, self.elector.name)

    def events(self, resource_version: str) -> Iterator[dict[str, Any]]:
        return self.kube.watch_stored(
            "Lease", self.elector.namespace, self.elector.name, resource_version=resource_version, timeout_s=self.timeout_s
        )

    def deliver(self, event_type: str, obj: dict[str, Any]) -> None:
        if event_type == "DELETED" or not (obj.get("spec") or {}).get("holderIdentity"):
            self.elector.wake()
        else:
            self.elector.saw(obj)
