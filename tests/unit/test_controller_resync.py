"""The controller's resync: a listing heals what the watches missed, and never resurrects."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from agent_identity.api.durations import format_timestamp
from agent_identity.engine.controller import Controller
from agent_identity.engine.workqueue import Lane
from agent_identity.kube.client import KubeError, OwnWrites

from .factories import identity_body


def controller() -> Controller:
    kube = SimpleNamespace(own_writes=OwnWrites(), on_identity_written=None)
    reconciler: Any = SimpleNamespace(kube=kube)
    return Controller(lambda lookup, profiles: reconciler, workers=1)


def body(name: str, uid: str, version: int) -> dict[str, Any]:
    document = identity_body(name, uid=uid, status={"phase": "Ready"})
    document["metadata"]["resourceVersion"] = str(version)
    return document


def test_an_identity_deleted_while_no_watch_looked_is_revoked_unless_changed_since_the_listing() -> None:
    ctl = controller()
    ctl.observe(None, body("kept", "u1", 10))
    ctl.observe(None, body("vanished", "u2", 11))
    ctl.observe(None, body("newer", "u3", 30))  # created after the listing below was taken
    done = ctl.resync([([body("kept", "u1", 10)], "20")], namespace=None)
    assert (done.listed, done.vanished) == (1, 1)
    assert ctl.lookup("support", "vanished") is None
    assert ctl.lookup("support", "newer") is not None and ctl.lookup("support", "kept") is not None


def test_a_listing_taken_before_a_deletion_never_brings_the_identity_back() -> None:
    ctl = controller()
    stale = body("gone", "u9", 10)
    ctl.observe(None, stale)
    ctl.observe("DELETED", body("gone", "u9", 12))
    with ctl._lock:
        del ctl._cache[("support", "gone")]  # the worker processed the deletion
    ctl.resync([([stale], "11")], namespace=None)
    assert ("support", "gone") not in ctl._cache
    ctl.observe(None, body("gone", "u10", 13))  # a new identity of the same name is a new uid
    assert ctl._cache[("support", "gone")].body["metadata"]["uid"] == "u10"


def test_a_listed_ready_identity_keeps_its_deadline_whatever_its_token_delivery() -> None:
    """A take-over lists thousands of settled identities: each is re-verified in the background
    lane and keeps its stated deadline, a Projected one (no token, so no token fields) included."""
    ctl = controller()
    expires = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1)
    token = {"issuedAt": format_timestamp(expires - timedelta(hours=2)), "tokenExpiresAt": format_timestamp(expires)}
    for name, held in (("secret", token), ("projected", {})):
        status = {"phase": "Ready", "observedGeneration": 1, "expiresAt": format_timestamp(expires), **held}
        ctl.observe(None, identity_body(name, uid=f"u-{name}", status=status))
        assert ctl.queue._queued[("support", name)] is Lane.BACKGROUND  # not looked at ahead of new work
        assert ctl.queue._due[("support", name)] == expires.timestamp()


def test_a_listing_is_verified_in_the_background_only_once_it_is_complete() -> None:
    """At a take-over the first pages' re-verification (four reads each) would compete with the
    listing that still has to find the overdue identities: the background lane waits for the end."""
    ctl = controller()
    held_during: list[bool] = []

    def pages() -> Iterator[tuple[list[dict[str, Any]], str]]:
        for index in range(3):
            yield [body(f"page-{index}", f"u{index}", 10 + index)], "20"
            held_during.append(Lane.BACKGROUND in ctl.queue._holds)

    assert ctl.resync(pages(), namespace=None).listed == 3
    assert held_during == [True, True, True]
    assert Lane.BACKGROUND not in ctl.queue._holds
    assert len(ctl.queue) == 3  # all three queued for re-verification


def test_a_listing_that_fails_midway_releases_the_background_lane() -> None:
    ctl = controller()

    def pages() -> Iterator[tuple[list[dict[str, Any]], str]]:
        yield [body("first", "u1", 10)], "20"
        raise KubeError(method="GET", path="/apis", status=503, reason="ServiceUnavailable", message="restarting")

    with pytest.raises(KubeError):
        ctl.resync(pages(), namespace=None)
    assert Lane.BACKGROUND not in ctl.queue._holds
    assert ctl.lookup("support", "first") is not None  # what was listed is kept; nothing revoked


def test_a_listing_of_one_namespace_never_revokes_another_namespaces_identities() -> None:
    """An operator serving two namespaces relists each on its own: the second listing, empty,
    must not take the first namespace's identities for deleted."""
    ctl = controller()
    ours = body("agent", "u1", 10)
    ctl.observe(None, ours)
    done = ctl.resync([([], "20")], namespace="other")
    assert done.vanished == 0
    assert ctl.lookup("support", "agent") is not None
    assert ctl.resync([([], "20")], namespace="support").vanished == 1  # its own namespace's listing judges it
