"""The controller's resync: a listing heals what the watches missed, and never resurrects."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

from agent_identity.api.durations import format_timestamp
from agent_identity.engine.controller import Controller
from agent_identity.engine.workqueue import Lane
from agent_identity.kube.client import OwnWrites

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
    assert ctl.resync([body("kept", "u1", 10)], version="20") == 1
    assert ctl.lookup("support", "vanished") is None
    assert ctl.lookup("support", "newer") is not None and ctl.lookup("support", "kept") is not None


def test_a_listing_taken_before_a_deletion_never_brings_the_identity_back() -> None:
    ctl = controller()
    stale = body("gone", "u9", 10)
    ctl.observe(None, stale)
    ctl.observe("DELETED", body("gone", "u9", 12))
    with ctl._lock:
        del ctl._cache[("support", "gone")]  # the worker processed the deletion
    ctl.resync([stale], version="11")
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
