"""What a take-over's listing has not brought yet is not waited for (engine/controller.py).
Retiring a delegator retires its delegates: a delegate seen after its delegator was retired goes
to the urgent lane, and a delegator retired before its namespace's listing is complete has its
delegates listed by the API server. And the owner of a child changed meanwhile is read and looked
at as changed at once."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from agent_identity.api.durations import format_timestamp
from agent_identity.engine.controller import Controller, Key
from agent_identity.engine.workqueue import Lane
from agent_identity.kube.client import KubeError, OwnWrites
from agent_identity.plan.children import LABEL_IDENTITY, ChildKind

from .factories import identity_body

LATER = format_timestamp(datetime.now(UTC) + timedelta(hours=1))


def controller() -> Controller:
    kube = SimpleNamespace(own_writes=OwnWrites(), on_identity_written=None)
    reconciler: Any = SimpleNamespace(kube=kube)
    return Controller(lambda lookup, profiles: reconciler, workers=1)


def identity(name: str, phase: str, version: int, *, delegator: str | None = None) -> dict[str, Any]:
    status = {"phase": phase, "observedGeneration": 1, "expiresAt": LATER}
    by = {"kind": "AgentIdentity", "name": delegator} if delegator else {"kind": "User", "name": "alice"}
    body = identity_body(name, uid=f"u-{name}", status=status, delegator=by)
    body["metadata"]["resourceVersion"] = str(version)
    return body


def never_read(namespace: str, name: str) -> dict[str, Any] | None:
    raise AssertionError(f"{namespace}/{name} was read: the cache should have answered")


def test_a_delegate_listed_after_its_delegator_was_retired_goes_first() -> None:
    ctl = controller()
    ctl.observe(None, identity("parent", "Expired", 1))
    ctl.observe(None, identity("child", "Ready", 2, delegator="parent"))
    ctl.observe(None, identity("cousin", "Ready", 3, delegator="uncle"))  # its delegator not seen yet: unknown
    ctl.observe(None, identity("done", "Expired", 4, delegator="parent"))  # retired itself: nothing to revoke
    assert ctl.queue._queued[("support", "child")] is Lane.URGENT
    assert ctl.queue._queued[("support", "cousin")] is Lane.BACKGROUND
    assert ctl.queue._queued[("support", "done")] is Lane.BACKGROUND


def test_a_user_named_like_a_retired_identity_is_not_a_delegator() -> None:
    ctl = controller()
    ctl.observe(None, identity("alice", "Expired", 1))
    ctl.observe(None, identity("child", "Ready", 2))  # delegated by the User alice
    assert ctl.queue._queued[("support", "child")] is Lane.BACKGROUND


def test_a_delegator_retired_before_the_listing_is_complete_has_its_delegates_listed() -> None:
    ctl = controller()
    asked: list[Key] = []

    def find(key: Key) -> Iterable[dict[str, Any]]:
        asked.append(key)
        return [identity("child", "Ready", 5, delegator="parent")]

    ctl.seeding("support", find, never_read)
    ctl.observe("MODIFIED", identity("parent", "Ready", 1))
    assert asked == []  # live: nothing to look for
    ctl.observe("MODIFIED", identity("parent", "Revoked", 2))  # its own delegator was deleted
    assert asked == [("support", "parent")]
    assert ctl.queue._queued[("support", "child")] is Lane.URGENT
    ctl.observe("MODIFIED", identity("parent", "Revoked", 3))
    assert asked == [("support", "parent")]  # already retired: asked once


def test_an_expiring_delegator_is_not_asked_about() -> None:
    """Its delegates expire by their own deadlines, never later than its own; a listing filtered on
    a field costs the API server a pass over every identity, too dear at every expiry."""
    ctl = controller()
    asked: list[Key] = []
    ctl.seeding("support", lambda key: asked.append(key) or [], never_read)
    ctl.observe("MODIFIED", identity("parent", "Ready", 1))
    ctl.observe("MODIFIED", identity("parent", "Expired", 2))
    assert asked == []


def test_an_identity_first_seen_retired_is_not_asked_about() -> None:
    """The listing brings thousands of retired identities: each delegate of one is urgent when
    listed (above); asking the API server about every retired identity would cost a listing each."""
    ctl = controller()
    asked: list[Key] = []
    ctl.seeding("support", lambda key: asked.append(key) or [], never_read)
    ctl.observe(None, identity("parent", "Expired", 1))
    assert asked == []


def test_once_the_namespace_is_listed_the_cache_answers_alone() -> None:
    ctl = controller()
    asked: list[Key] = []
    ctl.seeding("support", lambda key: asked.append(key) or [], never_read)
    ctl.resync(iter([([identity("parent", "Ready", 1)], "1")]), namespace="support")
    ctl.observe("MODIFIED", identity("parent", "Revoked", 2))
    assert asked == []


def test_delegates_that_cannot_be_listed_are_left_to_the_listing() -> None:
    ctl = controller()

    def unreachable(key: Key) -> Iterable[dict[str, Any]]:
        raise KubeError(method="GET", path="/apis/...", status=503, reason="ServiceUnavailable", message="unreachable")

    ctl.seeding("support", unreachable, never_read)
    ctl.observe("MODIFIED", identity("parent", "Ready", 1))
    ctl.observe("MODIFIED", identity("parent", "Revoked", 2))  # logged; the watch thread carries on
    assert ctl.queue._queued[("support", "parent")] is Lane.ROUTINE


def test_delegates_found_go_first_even_once_their_deleted_delegator_has_left_the_cache() -> None:
    """A worker revokes a deleted delegator and drops its entry while its delegates are listed."""
    ctl = controller()

    def find(key: Key) -> Iterable[dict[str, Any]]:
        ctl._cache.pop(key)  # the worker was quicker than the listing
        return [identity("child", "Ready", 5, delegator="parent"), identity("stranger", "Ready", 6)]

    ctl.seeding("support", find, never_read)
    ctl.observe("DELETED", identity("parent", "Ready", 1))  # deleted before this process ever saw it
    assert ctl.queue._queued[("support", "child")] is Lane.URGENT
    assert ctl.queue._queued[("support", "stranger")] is Lane.BACKGROUND  # a User named "parent" delegated it


def test_the_cache_is_warm_once_every_seeding_namespace_is_listed_whole() -> None:
    """What leader election asks (a replica with a cold cache leaves a free lease to a warm one)."""
    ctl = controller()
    for namespace in ("support", "billing"):
        ctl.seeding(namespace, lambda key: [], never_read)

    def broken() -> Iterable[tuple[list[dict[str, Any]], str]]:
        yield [identity("parent", "Ready", 1)], "1"
        raise KubeError(method="GET", path="/", status=0, reason="unreachable", message="connection refused")

    with pytest.raises(KubeError):
        ctl.resync(broken(), namespace="support")
    assert not ctl.warm.is_set()  # a listing that failed midway leaves the cache cold
    ctl.resync(iter([([identity("parent", "Ready", 1)], "1")]), namespace="support")
    assert not ctl.warm.is_set()  # billing not listed yet
    ctl.resync(iter([]), namespace="billing")
    assert ctl.warm.is_set()


def test_the_owner_of_a_child_changed_before_the_listing_reached_it_is_read_and_looked_at_as_changed() -> None:
    ctl = controller()
    read: list[tuple[str, str]] = []

    def reader(namespace: str, name: str) -> dict[str, Any] | None:
        read.append((namespace, name))
        return identity(name, "Ready", 7) if name == "widened" else None  # "gone": deleted, or another shard's

    ctl.seeding("support", lambda key: [], reader)
    for owner in ("gone", "widened"):
        labels = {LABEL_IDENTITY: owner}
        ctl.child_changed("MODIFIED", ChildKind.ROLE, {"namespace": "support", "name": f"aid-{owner}", "labels": labels})
        assert ctl.queue._pop_locked() == (("support", owner), Lane.ROUTINE)  # a worker takes it
        ctl._process(("support", owner))
    assert read == [("support", "gone"), ("support", "widened")]
    assert ctl.queue._queued == {("support", "widened"): Lane.ROUTINE}  # settled, yet not left to the background lane
    assert ("support", "gone") not in ctl._cache


def test_once_the_namespace_is_listed_an_owner_the_cache_lacks_is_not_read() -> None:
    ctl = controller()
    ctl.seeding("support", lambda key: [], never_read)
    ctl.resync(iter([([identity("parent", "Ready", 1)], "1")]), namespace="support")
    labels = {LABEL_IDENTITY: "x"}
    ctl.child_changed("DELETED", ChildKind.ROLE_BINDING, {"namespace": "support", "name": "aid-x", "labels": labels})
    ctl._process(("support", "x"))  # a child of an identity that is gone: nothing to look at
    assert ("support", "x") not in ctl._cache
