"""Self-retirement (spec.done, #33 part 2), the pure parts: the decision, the seal, what an agent
may change on its own AgentIdentity, and that done is one-way."""

from __future__ import annotations

import copy
from datetime import timedelta
from typing import Any

import pytest

from agent_identity.admission.identity import agent_self_update_problem
from agent_identity.api.conditions import Reason
from agent_identity.api.v1alpha1 import Phase
from agent_identity.keys.keyring import KeyRing, random_material, rotate
from agent_identity.keys.seal import check, seal
from agent_identity.plan.decisions import DelegatorView, Retire, decide
from agent_identity.policy.rules import unchanged_on_update

from .factories import CREATED, identity, identity_body

AGENT = "system:serviceaccount:support:aid-crawler"


def test_a_done_identity_retires_now_whatever_its_ttl_says() -> None:
    now = CREATED + timedelta(seconds=10)
    decision = decide(identity(done=True), delegator=None, now=now)
    assert isinstance(decision, Retire)
    assert (decision.reason, decision.phase) == (Reason.SELF_RETIRED, Phase.EXPIRED)
    assert decision.provenance.expires_at == now  # its record says it ended now, not at its TTL


def test_a_done_delegate_retires_even_while_its_delegator_is_missing() -> None:
    delegate = identity(delegator={"kind": "AgentIdentity", "name": "planner"}, done=True)
    decision = decide(delegate, delegator=DelegatorView(None), now=CREATED)
    assert isinstance(decision, Retire) and decision.reason is Reason.SELF_RETIRED


def test_done_false_is_no_retirement() -> None:
    assert not isinstance(decide(identity(done=False), delegator=None, now=CREATED), Retire)


def test_setting_done_after_admission_keeps_the_seal_and_nothing_else_does() -> None:
    ring: KeyRing = rotate(
        None, now=CREATED, period=timedelta(hours=24), publish_ahead=timedelta(minutes=10), new_material=random_material
    )
    spec: dict[str, Any] = identity_body()["spec"]
    value = seal(
        ring.active(now=CREATED, publish_ahead=timedelta(minutes=10)),
        namespace="support",
        name="crawler",
        spec=spec,
        creator="{}",
        now=CREATED,
        nonce="n",
    )
    common = {"namespace": "support", "name": "crawler", "creator": "{}", "created_at": CREATED}
    assert check(ring, value, spec=spec | {"done": True}, **common) is None
    assert check(ring, value, spec=spec | {"ttl": "24h"}, **common) is not None


def test_done_cannot_be_undone() -> None:
    violation = unchanged_on_update(identity(done=True).spec, identity(done=False).spec)
    assert violation is not None and violation.rule == "done-final"
    assert unchanged_on_update(identity().spec, identity(done=True).spec) is None


def test_the_agent_may_set_done_on_its_own_identity() -> None:
    old = identity_body()
    assert agent_self_update_problem(old, identity_body(done=True), username=AGENT) is None


def _changed(change: str) -> dict[str, Any]:
    body = copy.deepcopy(identity_body(done=True))
    metadata = body["metadata"]
    if change == "labels":
        metadata["labels"] = {"agentidentity.dev/profile": "admin"}
    elif change == "annotations":
        metadata["annotations"] = {"agentidentity.dev/creator-seal": "forged"}
    elif change == "finalizers":
        metadata["finalizers"] = ["keep.me/alive"]
    elif change == "ownerReferences":
        metadata["ownerReferences"] = []
        return body
    elif change == "task":
        body["spec"]["task"] = "something else"
    return body


@pytest.mark.parametrize("change", ["labels", "annotations", "finalizers", "task"])
def test_the_agent_may_change_nothing_else(change: str) -> None:
    problem = agent_self_update_problem(identity_body(), _changed(change), username=AGENT)
    assert problem is not None and problem.rule == "agent-self-update"
    assert change in problem.message and "may only set spec.done" in problem.message


def test_stripping_an_owner_reference_is_a_change_too() -> None:
    old = identity_body()
    old["metadata"]["ownerReferences"] = [{"kind": "AgentIdentity", "name": "planner", "uid": "u"}]
    problem = agent_self_update_problem(old, _changed("ownerReferences"), username=AGENT)
    assert problem is not None and "metadata.ownerReferences" in problem.message


def test_another_agent_or_a_user_is_judged_by_the_other_rules() -> None:
    for username in ("system:serviceaccount:support:aid-planner", "alice", "system:serviceaccount:other:aid-crawler"):
        assert agent_self_update_problem(identity_body(), _changed("labels"), username=username) is None
