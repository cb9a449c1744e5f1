"""The dead-man's switch (spec.heartbeat, #33 part 3), the pure rule: a period counts from the
later of the last renewal and the moment the API server was reachable again."""

from __future__ import annotations

from datetime import timedelta

from agent_identity.plan import children
from agent_identity.plan.children import Provenance
from agent_identity.plan.heartbeat import format_micro, heartbeat_lease, heartbeat_state

from .factories import CREATED, identity

AGENT = identity(heartbeat="30s")
PROVENANCE = Provenance(delegator="user:alice", task="t", chain=(), expires_at=CREATED + timedelta(minutes=1))


def lease(renewed: timedelta | None) -> dict[str, object]:
    return {"spec": {"renewTime": format_micro(CREATED + renewed)} if renewed is not None else {}}


def test_alive_until_one_period_after_the_last_renewal() -> None:
    state = heartbeat_state(AGENT, lease(timedelta(seconds=5)), now=CREATED + timedelta(seconds=34), reachable_since=CREATED)
    assert state.lost is None and state.deadline == CREATED + timedelta(seconds=35)
    lost = heartbeat_state(AGENT, lease(timedelta(seconds=5)), now=CREATED + timedelta(seconds=35), reachable_since=CREATED)
    assert lost.lost is not None and "no renewal of aid-crawler-heartbeat for 30s" in lost.lost


def test_an_outage_gives_a_whole_period_after_the_api_server_is_back() -> None:
    back = CREATED + timedelta(minutes=5)
    state = heartbeat_state(AGENT, lease(timedelta(seconds=5)), now=back + timedelta(seconds=29), reachable_since=back)
    assert state.lost is None and state.deadline == back + timedelta(seconds=30)


def test_a_deleted_lease_or_a_renewal_in_the_future_is_lost() -> None:
    assert "deleted" in str(heartbeat_state(AGENT, None, now=CREATED, reachable_since=CREATED).lost)
    ahead = heartbeat_state(AGENT, lease(timedelta(hours=1)), now=CREATED, reachable_since=CREATED)
    assert "in the future" in str(ahead.lost)


def test_the_lease_and_the_right_to_renew_it_name_the_agent_only() -> None:
    body = heartbeat_lease(AGENT, now=CREATED)
    assert body["metadata"]["name"] == "aid-crawler-heartbeat" and body["spec"]["leaseDurationSeconds"] == 30
    assert body["metadata"]["ownerReferences"][0]["uid"] == "uid-crawler"
    rules = children.role(AGENT, PROVENANCE)["rules"]
    assert rules[-1] == {
        "apiGroups": ["coordination.k8s.io"],
        "resources": ["leases"],
        "verbs": ["get", "update", "patch"],
        "resourceNames": ["aid-crawler-heartbeat"],
    }
    assert not any("leases" in rule["resources"] for rule in children.role(identity(), PROVENANCE)["rules"])
