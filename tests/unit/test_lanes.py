"""Which lane of the work queue an AgentIdentity event puts its key in."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

from agent_identity.api.durations import format_timestamp
from agent_identity.engine.controller import Controller, lane_for
from agent_identity.engine.records import Result
from agent_identity.engine.workqueue import Lane
from agent_identity.kube.client import OwnWrites


def body(phase: str | None, *, expires_in: timedelta = timedelta(hours=1), observed: int = 1) -> dict[str, Any]:
    status = {"phase": phase, "observedGeneration": observed, "expiresAt": format_timestamp(datetime.now(UTC) + expires_in)}
    return {"metadata": {"name": "a", "namespace": "n", "generation": 1}, "status": status if phase else {}}


def test_a_settled_identity_seen_in_a_listing_is_only_re_verified_in_the_background() -> None:
    assert lane_for(None, body("Ready")) is Lane.BACKGROUND
    assert lane_for(None, body("Expired", expires_in=timedelta(hours=-1))) is Lane.BACKGROUND
    assert lane_for(None, body("Denied")) is Lane.BACKGROUND


def test_changes_and_unsettled_identities_are_routine() -> None:
    assert lane_for("MODIFIED", body("Ready")) is Lane.ROUTINE  # something changed: look now
    assert lane_for(None, body("Pending")) is Lane.ROUTINE
    assert lane_for(None, body(None)) is Lane.ROUTINE  # never reconciled
    assert lane_for(None, body("Ready", observed=0)) is Lane.ROUTINE  # its spec moved since


def test_a_standby_sends_whatever_the_leader_has_settled_to_re_verification() -> None:
    assert lane_for("MODIFIED", body("Ready"), standby=True) is Lane.BACKGROUND
    assert lane_for("ADDED", body("Denied"), standby=True) is Lane.BACKGROUND
    assert lane_for("MODIFIED", body("Pending"), standby=True) is Lane.ROUTINE  # the leader is not done
    assert lane_for("MODIFIED", body("Ready", observed=0), standby=True) is Lane.ROUTINE  # nor with its new spec
    assert lane_for("DELETED", body("Ready"), standby=True) is Lane.ROUTINE  # revoked first, not re-verified
    assert lane_for("MODIFIED", body("Ready", expires_in=timedelta(seconds=-5)), standby=True) is Lane.URGENT


def test_a_standby_takes_over_with_only_what_the_leader_left_unsettled_as_its_backlog() -> None:
    """Created and provisioned while this replica stood by: routine when created, then settled
    by the leader; at the take-over it waits behind anything new, its deadline scheduled. What
    the leader left unsettled is the backlog, which takes turns with new work (test_workqueue).
    The leader itself keeps a settled change that is not its own write routine (a user's edit)."""
    for standby in (True, False):
        ctl = Controller(lambda lookup, profiles: _reconciler(), workers=1)
        if standby:
            ctl.queue.pause()
        created = {
            name: body(None)
            | {"metadata": {"name": name, "namespace": "n", "generation": 1, "resourceVersion": "1", "uid": f"u-{name}"}}
            for name in ("a", "b")
        }
        for identity in created.values():
            ctl.observe("ADDED", identity)
        assert ctl.queue._queued == {("n", "a"): Lane.ROUTINE, ("n", "b"): Lane.ROUTINE}
        ctl.observe("MODIFIED", body("Ready") | {"metadata": created["a"]["metadata"] | {"resourceVersion": "2"}})
        assert ctl.queue._queued == {("n", "a"): Lane.BACKGROUND if standby else Lane.ROUTINE, ("n", "b"): Lane.ROUTINE}
        assert (("n", "a") in ctl.queue._due) is standby  # a standby keeps its deadline from the status
        ctl.lead()
        unsettled = Lane.BACKLOG if standby else Lane.ROUTINE  # a queue never paused has no backlog
        assert ctl.queue._queued == {("n", "a"): Lane.BACKGROUND if standby else Lane.ROUTINE, ("n", "b"): unsettled}
        assert not ctl.queue.paused


def _reconciler() -> Any:
    return SimpleNamespace(kube=SimpleNamespace(own_writes=OwnWrites(), on_identity_written=None))


def test_a_live_identity_past_its_deadline_goes_first() -> None:
    assert lane_for(None, body("Ready", expires_in=timedelta(seconds=-5))) is Lane.URGENT
    assert lane_for("MODIFIED", body("Pending", expires_in=timedelta(seconds=-5))) is Lane.URGENT


def test_a_retirement_s_clean_up_stays_urgent_so_new_identities_never_queue_behind_a_burst_of_them() -> None:
    """Its ServiceAccount is gone (follow_up): the Role, RoleBinding and status go behind the
    deadlines already due, not into the routine lane ahead of identities created meanwhile."""
    overdue = body("Ready", expires_in=timedelta(seconds=-5))
    overdue["metadata"] |= {"name": "overdue", "resourceVersion": "1", "uid": "u-overdue"}
    reconciler: Any = SimpleNamespace(
        kube=SimpleNamespace(own_writes=OwnWrites(), on_identity_written=None),
        reconcile=lambda identity: Result(follow_up=True),
    )
    ctl = Controller(lambda lookup, profiles: reconciler, workers=1)
    ctl.observe(None, overdue)
    assert ctl.queue._queued == {("n", "overdue"): Lane.URGENT}
    ctl.queue._pop_locked()
    ctl._process(("n", "overdue"))  # its ServiceAccount deleted: the rest follows
    assert ctl.queue._queued == {("n", "overdue"): Lane.URGENT}
