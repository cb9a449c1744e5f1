"""Glue between watch events and the reconciler: a cache of the latest AgentIdentity bodies, a
work queue of their keys, and the deadlines each reconcile asks for.

Watch events only *enqueue*; workers reconcile the newest body seen for the key, so a burst of
events for one object costs one reconcile, and a deadline needs no timer of its own.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any, NamedTuple

import orjson

from agent_identity.api.durations import next_look, parse_timestamp
from agent_identity.api.v1alpha1 import FINAL_PHASES, RETIRED_PHASES, SETTLED_PHASES, Phase
from agent_identity.engine.credentials import SigningFailed
from agent_identity.engine.reconciler import Reconciler
from agent_identity.engine.workqueue import Lane, WorkQueue
from agent_identity.kube.client import DELETED, IDENTITY, KubeError, without_managed_fields
from agent_identity.ops.metrics import LiveIdentity, Metrics
from agent_identity.plan.children import LABEL_IDENTITY, ChildKind
from agent_identity.plan.decisions import parse_identity

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (namespace, name)
TOMBSTONE_S = 600.0


@dataclass(frozen=True, slots=True)
class _Entry:
    """One cached identity. The body is kept packed (compact JSON, by orjson: a fifth of the memory of the
    parsed dict, which decides the operator's size at 100,000 identities) and parsed when a
    reconcile or a lookup needs it; what the hot paths and the metrics read is kept beside it."""

    packed: bytes
    live: LiveIdentity
    version: int  # resourceVersion
    terminating: bool  # deletionTimestamp set
    deleted: bool = False

    @classmethod
    def of(cls, body: dict[str, Any], *, deleted: bool = False) -> _Entry:
        slim = without_managed_fields(body)  # a listing's pages come without them already: no second copy
        return cls(
            packed=orjson.dumps(slim),
            live=LiveIdentity.of(slim),
            version=_resource_version(slim),
            terminating=bool(slim["metadata"].get("deletionTimestamp")),
            deleted=deleted,
        )

    @property
    def body(self) -> dict[str, Any]:
        return dict(orjson.loads(self.packed))


class _Seeding(NamedTuple):
    """How the API server is asked what the cache cannot tell yet (see Controller.seeding)."""

    find_delegates: Callable[[Key], Iterable[dict[str, Any]]]
    read: Callable[[str, str], dict[str, Any] | None]


class Resynced(NamedTuple):
    listed: int
    vanished: int  # cached, not listed: deleted while no watch was looking


def _resource_version(body: dict[str, Any]) -> int:
    return _int(body.get("metadata", {}).get("resourceVersion", 0))


def _int(version: object) -> int:
    try:
        return int(str(version))
    except (TypeError, ValueError):
        return 0


def _overdue(body: dict[str, Any]) -> bool:
    """A live identity past its deadline (seen at start-up after downtime), or whose agent said
    its task is done (spec.done): retire it first."""
    status = body.get("status") or {}
    expires = status.get("expiresAt")
    if status.get("phase") not in ("Ready", "Pending"):
        return False
    if (body.get("spec") or {}).get("done") is True:
        return True
    return bool(expires) and parse_timestamp(str(expires)) <= utc_now()


def lane_for(event_type: str | None, body: dict[str, Any], *, standby: bool = False) -> Lane:
    """Where a key goes: a due deadline first; an identity that a listing (start-up, relist)
    shows settled is only re-verified, behind anything that changed.

    A standby (another replica leads) sends every settled identity there, whatever the event: the
    leader has finished that generation (its status is written last). At a take-over the routine
    lane then holds only what the leader had not settled, and new work does not queue behind
    re-verifying everything that changed while this replica stood by (5 creates a second for an
    hour would be 18,000 keys). A deletion stays routine: its credentials are revoked first."""
    if _overdue(body):
        return Lane.URGENT
    status = body.get("status") or {}
    generation = (body.get("metadata") or {}).get("generation")
    settled = status.get("phase") in SETTLED_PHASES and status.get("observedGeneration") == generation
    listed = event_type is None or (standby and event_type != "DELETED")
    return Lane.BACKGROUND if listed and settled else Lane.ROUTINE


def _phase(entry: _Entry | None) -> str | None:
    if entry is None or entry.deleted:
        return None
    return entry.live.phase


def _gone(entry: _Entry | None) -> bool:
    """Deleted, being deleted, or retired: its delegates lose their credentials now."""
    if entry is None or entry.deleted:
        return True
    return entry.terminating or _phase(entry) in RETIRED_PHASES


def _state(entry: _Entry | None) -> tuple[str | None, bool]:
    return _phase(entry), _gone(entry)


def _delegator_key(key: Key, body: dict[str, Any]) -> Key | None:
    """The identity's delegator's key, when its delegator is an AgentIdentity (same namespace)."""
    delegator = (body.get("spec") or {}).get("delegator") or {}
    return (key[0], str(delegator.get("name"))) if delegator.get("kind") == "AgentIdentity" else None


def key_of(body: dict[str, Any]) -> Key:
    metadata = body["metadata"]
    return str(metadata["namespace"]), str(metadata["name"])


class Controller:
    def __init__(
        self,
        make_reconciler: Callable[
            [Callable[[str, str], dict[str, Any] | None], Callable[[str], dict[str, Any] | None]], Reconciler
        ],
        *,
        workers: int,
        metrics: Metrics | None = None,
    ) -> None:
        self.metrics = metrics
        self._first_seen: dict[Key, float] = {}
        self._lock = threading.Lock()
        self._cache: dict[Key, _Entry] = {}
        # delegator key -> its delegates' keys, so a delegator's change reaches them at once
        self._delegates: dict[Key, set[Key]] = {}
        self._profiles: dict[str, dict[str, Any]] = {}
        self._deleted_uids: dict[str, float] = {}  # uid -> when its deletion was seen (insertion order)
        self._expected: dict[Key, Callable[[], dict[str, Any] | None]] = {}  # see expect()
        self._seeding: dict[str | None, _Seeding] = {}  # see seeding()
        self.warm = threading.Event()  # every namespace seeding() named has been listed: the cache is full
        self.reconciler = make_reconciler(self.lookup, self.lookup_profile)
        self.reconciler.kube.on_identity_written = self._remember
        self.queue: WorkQueue[Key] = WorkQueue(self._process, workers=workers, name="agentidentity")

    def start(self) -> None:
        self.queue.start()

    def stop(self) -> None:
        self.queue.stop()

    def lead(self) -> None:
        """This replica leads now (a standby until then): the queue it kept is worked off, and
        the log says what it held."""
        waiting = self.queue.waiting()
        log.info(
            "taking over: %d deadlines due, %d changed (the backlog: in turn with new work), %d to re-verify, %d ahead",
            waiting[Lane.URGENT],
            waiting[Lane.ROUTINE],
            waiting[Lane.BACKGROUND],
            self.queue.pending_deadlines,
        )
        self.queue.resume()

    # -- fed by watch events ----------------------------------------------------------------------

    def observe(self, event_type: str | None, body: dict[str, Any]) -> None:
        """An AgentIdentity event: remember the newest body, enqueue the key if anything is new."""
        key = key_of(body)
        deleted = event_type == "DELETED"
        uid = str(body["metadata"].get("uid", ""))
        with self._lock:
            current = self._cache.get(key)
            if current and not deleted and current.version >= _resource_version(body):
                return  # our own write, already cached from its response, or an older event
            if deleted:
                self._remember_deletion(uid)
            elif uid in self._deleted_uids:
                return  # a listing taken before its deletion: it must not come back to life
            entry = _Entry.of(body, deleted=deleted)
            delegates = self._store_locked(key, body, entry, previous=current)
            retired_delegator = not deleted and self._delegator_retired_locked(key, body)
            if deleted:
                self._first_seen.pop(key, None)
            else:
                self._first_seen.setdefault(key, time.time())
        standby = self.queue.paused
        lane = Lane.URGENT if retired_delegator else lane_for(event_type, body, standby=standby)
        if lane is Lane.BACKGROUND and (body.get("status") or {}).get("phase") == "Ready":
            self._schedule_from_status(key, body)
        # A standby keeps each key where its newest state says (down too: see lane_for).
        enqueue = partial(self.queue.put, key, lane) if standby else partial(self.queue.add, key, lane=lane)
        version = DELETED if deleted else str(body["metadata"].get("resourceVersion"))
        if not self.reconciler.kube.own_writes.is_echo((IDENTITY, *key), version, enqueue):
            enqueue()
        self._notify_delegates(key, delegates, entry, previous=current)

    def seeding(
        self,
        namespace: str | None,
        find_delegates: Callable[[Key], Iterable[dict[str, Any]]],
        read: Callable[[str, str], dict[str, Any] | None],
    ) -> None:
        """Until the first listing of ``namespace`` (None: every namespace) is complete, the cache
        cannot tell who delegates to an identity retired meanwhile, nor whether an identity it
        lacks exists: ``find_delegates`` and ``read`` ask the API server instead (:meth:`resync`
        ends this)."""
        with self._lock:
            self._seeding[namespace] = _Seeding(find_delegates, read)

    def expect(self, key: Key, at: float, read: Callable[[], dict[str, Any] | None]) -> bool:
        """A deadline known before its identity is (from a hint, while a listing has not reached
        it): unless a watch or the listing brings the identity first, at ``at`` it is read with
        ``read`` and observed, so its own status says what is due. False: it is cached already."""
        with self._lock:
            if key in self._cache:
                return False
            self._expected[key] = read
            self.queue.add_at(key, at)  # under the lock: a listing's timer for it is never replaced by this one
        return True

    def _read_uncached(self, key: Key) -> None:
        """A key asked for before any listing or watch brought its identity: a deadline known
        from its hint (:meth:`expect`), or the owner of a child someone changed while its
        namespace's first listing runs (a Role widened during a take-over is not left for the
        listing to reach: at 100,000 identities, half a minute). It is read now, observed, and
        looked at as changed. Once the cache is whole, an identity it lacks does not exist (or is
        another shard's): nothing is read."""
        with self._lock:
            expected, seeding = self._expected.get(key), self._seeding_of(key)
        if expected is not None:
            read: Callable[[], dict[str, Any] | None] = expected
        elif seeding is not None:
            read = partial(seeding.read, *key)
        else:
            return
        body = read()  # an error: retried with backoff (still expected, if it was)
        with self._lock:
            self._expected.pop(key, None)
        if body is not None:
            self.observe(None, body)  # queued in its lane: an overdue one first
            self.queue.add(key)  # and at least as changed (being processed: again right after)

    def _seeding_of(self, key: Key) -> _Seeding | None:
        """How to ask about ``key`` while its namespace's first listing runs (None once it is done), under the lock."""
        return self._seeding.get(key[0], self._seeding.get(None))

    def _remember_deletion(self, uid: str) -> None:
        """Tombstones, kept for TOMBSTONE_S: longer than any listing can take to be observed."""
        now = time.monotonic()
        self._deleted_uids[uid] = now
        while self._deleted_uids:
            oldest, when = next(iter(self._deleted_uids.items()))
            if now - when < TOMBSTONE_S:
                break
            del self._deleted_uids[oldest]

    def _notify_delegates(self, key: Key, delegates: list[Key], delegator: _Entry, *, previous: _Entry | None) -> None:
        """A delegator's state moved: its delegates are looked at again, first of all when it is
        gone (revoked by the operator at once, not whenever the garbage collector gets to them)."""
        gone = _gone(delegator)
        for delegate in delegates:
            self.queue.add(delegate, lane=Lane.URGENT if gone else Lane.ROUTINE)
        revoked_now = _phase(delegator) == Phase.REVOKED and previous is not None and not _gone(previous)
        if delegator.deleted or revoked_now:
            # Deleted (perhaps before we ever saw it) or revoked with its own delegator. An expired
            # one is not asked about: its delegates' deadlines are never later than its own, so
            # their own deadlines retire them, and a listing the API server filters on a field of
            # each of 100,000 identities is too dear to make at every expiry.
            self._find_uncached_delegates(key)

    def _find_uncached_delegates(self, key: Key) -> None:
        """A delegator gone while its namespace's first listing runs may have delegates that no
        listing has brought yet: the API server lists them, and each is observed and sent to the
        urgent lane instead of waiting for the listing to reach it."""
        with self._lock:
            seeding = self._seeding_of(key)
        if seeding is None:
            return
        try:
            found = list(seeding.find_delegates(key))
        except KubeError as error:
            log.warning("the delegates of %s/%s were not listed (%s): the full listing will find them", *key, error)
            return
        for body in found:
            self.observe(None, body)
            if _delegator_key(key_of(body), body) == key:  # not a User of the same name
                self.queue.add(key_of(body), lane=Lane.URGENT)  # even if the delegator's entry is gone by now

    def _delegator_retired_locked(self, key: Key, body: dict[str, Any]) -> bool:
        """This identity holds credentials, and its delegator is cached as gone: retired before
        this one was seen (a take-over's listing), so no notice reached it."""
        delegator = _delegator_key(key, body)
        if delegator is None or (body.get("status") or {}).get("phase") in FINAL_PHASES:
            return False
        entry = self._cache.get(delegator)
        return entry is not None and _gone(entry)

    def _schedule_from_status(self, key: Key, body: dict[str, Any]) -> None:
        """A Ready identity found by a listing is re-verified in the background; meanwhile its
        deadline, as its status states it, is kept."""
        status = body.get("status") or {}
        try:
            expires_at = parse_timestamp(status["expiresAt"])
            when = expires_at  # a Projected identity holds no token to refresh
            if "tokenExpiresAt" in status:
                when = next_look(
                    expires_at=expires_at,
                    token_issued_at=parse_timestamp(status["issuedAt"]),
                    token_expires_at=parse_timestamp(status["tokenExpiresAt"]),
                )
        except (KeyError, TypeError, ValueError):
            self.queue.add(key)  # a status we cannot read: look now
            return
        self.queue.add_at(key, when.timestamp())

    def _store_locked(self, key: Key, body: dict[str, Any], entry: _Entry, *, previous: _Entry | None) -> list[Key]:
        """Caches ``entry`` (of ``body``); the delegates to look at again because their delegator's phase moved."""
        self._cache[key] = entry
        self._expected.pop(key, None)
        self._index_delegator(key, body, deleted=entry.deleted)
        return list(self._delegates.get(key, ())) if _state(previous) != _state(entry) else []

    def _index_delegator(self, key: Key, body: dict[str, Any], *, deleted: bool) -> None:
        parent = _delegator_key(key, body)
        if parent is None:
            return
        if deleted:
            self._delegates.get(parent, set()).discard(key)
            if not self._delegates.get(parent):
                self._delegates.pop(parent, None)
        else:
            self._delegates.setdefault(parent, set()).add(key)

    def observe_profile(self, event_type: str | None, body: dict[str, Any]) -> None:
        name = str(body["metadata"]["name"])
        with self._lock:
            if event_type == "DELETED":
                self._profiles.pop(name, None)
            else:
                self._profiles[name] = body

    def lookup_profile(self, name: str) -> dict[str, Any] | None:
        with self._lock:
            body = self._profiles.get(name)
        return body if body is not None else self.reconciler.kube.get_profile(name)

    def child_changed(self, event_type: str, kind: ChildKind, metadata: dict[str, Any]) -> None:
        """A child was altered or deleted by someone else: look at its owner again."""
        owner = (str(metadata["namespace"]), str((metadata.get("labels") or {}).get(LABEL_IDENTITY)))
        version = DELETED if event_type == "DELETED" else str(metadata.get("resourceVersion"))
        key = (str(kind), owner[0], str(metadata["name"]))
        if not self.reconciler.kube.own_writes.is_echo(key, version, lambda: self.queue.add(owner)):
            self.queue.add(owner)

    def workload_changed(self, event_type: str, metadata: dict[str, Any]) -> None:
        """An agent pod or Job (labelled for an identity) changed or went: an identity bound to
        its workload (spec.boundTo) is looked at first of all, since its task may have ended. An
        identity not bound is not disturbed."""
        key = (str(metadata.get("namespace")), str((metadata.get("labels") or {}).get(LABEL_IDENTITY)))
        with self._lock:
            entry = self._cache.get(key)
        if entry is not None and not entry.deleted and b'"boundTo":' in entry.packed:
            self.queue.add(key, lane=Lane.URGENT)

    def reverify_all(self, namespace: str | None = None) -> None:
        """Every live identity (of ``namespace``, or of all) looked at again, behind anything that
        changed (after a watch gap)."""
        with self._lock:
            keys = [key for key, entry in self._cache.items() if not entry.deleted and namespace in (None, key[0])]
        for key in keys:
            self.queue.add(key, lane=Lane.BACKGROUND)

    def resync(self, pages: Iterable[tuple[list[dict[str, Any]], str]], *, namespace: str | None) -> Resynced:
        """A fresh listing of ``namespace`` (None: every namespace), page by page (each page with
        the listing's resourceVersion), replaces what the watches told us: every identity in it is
        observed (and verified in the background lane, which waits until the listing is done: the
        overdue, and anything new, go first), and one of that namespace cached but no longer
        listed, and not changed since the listing was taken, was deleted while a watch was not
        looking: it is revoked. Another namespace's identities are another listing's to judge."""
        seen: set[Key] = set()
        version = "0"
        self.queue.hold(Lane.BACKGROUND)
        try:
            for page, page_version in pages:
                version = page_version  # every page is as of the first one's version
                for body in page:
                    seen.add(key_of(body))
                    self.observe(None, body)
        finally:
            self.queue.release(Lane.BACKGROUND)
        with self._lock:
            self._seeding.pop(namespace, None)  # the cache knows every delegate of this namespace now
            if not self._seeding:
                self.warm.set()
        self.reverify_all(namespace)
        with self._lock:
            vanished = [
                entry.body
                for key, entry in self._cache.items()
                if namespace in (None, key[0]) and key not in seen and not entry.deleted and entry.version <= _int(version)
            ]
        for body in vanished:
            log.info("%s/%s was deleted while no watch was looking: revoking", *key_of(body))
            self.observe("DELETED", body)
        return Resynced(listed=len(seen), vanished=len(vanished))

    def lookup(self, namespace: str, name: str) -> dict[str, Any] | None:
        with self._lock:
            entry = self._cache.get((namespace, name))
        if entry is not None:
            return None if entry.deleted else entry.body
        return self.reconciler.kube.get_identity(namespace, name)

    def __len__(self) -> int:
        with self._lock:
            return sum(1 for entry in self._cache.values() if not entry.deleted)

    def live_identities(self) -> list[LiveIdentity]:
        """What the state metrics count, of every live identity."""
        with self._lock:
            return [entry.live for entry in self._cache.values() if not entry.deleted]

    # -- run by workers -----------------------------------------------------------------------------

    def _process(self, key: Key) -> float | None:
        with self._lock:
            entry = self._cache.get(key)
        if entry is None:
            self._read_uncached(key)
            return None
        if entry.deleted:
            with self._lock:
                if self._cache.get(key) is entry:
                    del self._cache[key]
            self.queue.forget(key)
            identity = parse_identity(entry.body)
            if not isinstance(identity, str):
                self.reconciler.revoke(identity)
            return None
        try:
            result = self.reconciler.reconcile(entry.body)
        except Exception as error:
            self._count_failure(error)
            raise  # the work queue retries with backoff
        if result.follow_up:  # it is being processed: runs again right after, behind every deadline already due
            self.queue.add(key, lane=Lane.URGENT)
        return result.requeue_at.timestamp() if result.requeue_at else None

    def _count_failure(self, error: Exception) -> None:
        if self.metrics is None:
            return
        reason = error.reason if isinstance(error, KubeError) else type(error).__name__
        self.metrics.reconcile_errors.labels(reason).inc()
        if isinstance(error, KubeError) and error.path.endswith("/token"):
            self.metrics.token_failures.inc()
        if isinstance(error, SigningFailed):
            self.metrics.assertion_failures.inc()

    def first_seen(self, namespace: str, name: str) -> float | None:
        """When the operator first saw this identity (the start of its create-to-Ready latency)."""
        with self._lock:
            return self._first_seen.get((namespace, name))

    def _remember(self, body: dict[str, Any]) -> None:
        """Cache what our own write returned so the next reconcile never sees a stale status."""
        key = key_of(body)
        with self._lock:
            current = self._cache.get(key)
            if current is None or current.deleted:
                return
            if _resource_version(body) <= current.version:
                return
            entry = _Entry.of(body)
            delegates = self._store_locked(key, body, entry, previous=current)
        self._notify_delegates(key, delegates, entry, previous=current)


def utc_now() -> datetime:
    return datetime.now(UTC)
