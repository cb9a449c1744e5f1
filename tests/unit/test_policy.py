"""The policy chain, check by check, with facts built by hand (no API server)."""

from __future__ import annotations

from typing import Any

import pytest

from agent_identity.api import AgentIdentity, AgentProfile
from agent_identity.policy import Creator, Facts, Violation, delegation_depth, evaluate, unchanged_on_update
from agent_identity.rbac import Permission

from .factories import CREATED, identity

CM_GET = {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}


def profile(**changes: Any) -> AgentProfile:
    spec = {
        "riskLevel": "low",
        "maxTTL": "5m",
        "maxDelegationDepth": 1,
        "permissionCeiling": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}],
    }
    spec.update(changes)
    return AgentProfile.model_validate(
        {"apiVersion": "agentidentity.dev/v1alpha1", "kind": "AgentProfile", "metadata": {"name": "standard"}, "spec": spec}
    )


def facts(agent: AgentIdentity | None = None, **changes: Any) -> Facts:
    values: dict[str, Any] = {
        "identity": agent or identity(profile="standard", ttl="90s", scopes=[CM_GET]),
        "created_at": CREATED,
        "profile": profile(),
        "delegator": None,
        "creator": Creator(username="alice", groups=("team",)),
        "require_creator": True,
    }
    values.update(changes)
    return Facts(**values)


def rules(found: list[Violation]) -> list[str]:
    return [violation.rule for violation in found]


def test_a_compliant_identity_has_no_violations() -> None:
    assert evaluate(facts()) == []


@pytest.mark.parametrize(
    ("agent", "changes", "expected", "words"),
    [
        (identity(profile="gone", scopes=[CM_GET]), {"profile": None}, "profile-exists", "'gone' does not exist"),
        (None, {"profile": profile(namespaces=["elsewhere"])}, "namespace-allowed", "namespace 'support'"),
        (
            identity(delegator=None, scopes=[CM_GET]),
            {"profile": profile(requireDelegator=True)},
            "delegator-required",
            "requires",
        ),
        (identity(ttl="10m", scopes=[CM_GET]), {}, "ttl-within-profile", "10m exceeds profile 'standard' maxTTL 5m"),
        (identity(ttl=None, scopes=[CM_GET]), {}, "ttl-set", "spec.ttl: required"),
        (
            identity(scopes=[{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]),
            {},
            "scopes-within-ceiling",
            "get pods (core group) exceed the permissionCeiling",
        ),
        (
            identity(scopes=[CM_GET], token={"audiences": ["vault"]}),
            {"profile": profile(audiences=["other"])},
            "audiences-allowed",
            "vault not allowed",
        ),
        (None, {"creator": None}, "creator-known", "no creator recorded"),
        (None, {"creator_lacks": (Permission("", "configmaps", "get"),)}, "creator-holds-scopes", "alice may not get configmaps"),
        (
            identity(scopes=[CM_GET], delegator={"kind": "User", "name": "bob"}),
            {},
            "delegator-is-creator",
            "alice may not act for User bob",
        ),
    ],
)
def test_each_check_names_its_rule_and_reason(
    agent: AgentIdentity | None, changes: dict[str, Any], expected: str, words: str
) -> None:
    found = evaluate(facts(agent, **changes))
    assert rules(found) == [expected]
    assert words in found[0].message


def test_a_profile_default_ttl_applies_when_the_spec_has_none() -> None:
    assert evaluate(facts(identity(ttl=None, scopes=[CM_GET]), profile=profile(defaultTTL="1m"))) == []


def test_impersonation_rights_let_a_creator_act_for_someone_else() -> None:
    agent = identity(scopes=[CM_GET], delegator={"kind": "User", "name": "bob"})
    assert evaluate(facts(agent, creator_may_act_as_delegator=True)) == []


def test_without_webhooks_the_creator_is_not_required() -> None:
    assert evaluate(facts(creator=None, require_creator=False)) == []


def planner(*, chain: list[str], expires: str = "2026-11-28T12:10:00Z") -> AgentIdentity:
    return identity(
        "planner",
        uid="uid-planner",
        scopes=[CM_GET],
        ttl="10m",
        status={"phase": "Ready", "expiresAt": expires, "delegationChain": chain},
    )


def delegate(**changes: Any) -> AgentIdentity:
    values: dict[str, Any] = {"scopes": [CM_GET], "ttl": "60s", "delegator": {"kind": "AgentIdentity", "name": "planner"}}
    values.update(changes)
    return identity("crawler", **values)


def test_delegation_only_narrows() -> None:
    wider = delegate(scopes=[{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}])
    found = evaluate(facts(wider, delegator=planner(chain=["user:alice"])))
    assert rules(found) == ["delegate-within-delegator"]
    assert "list configmaps (core group)" in found[0].message


def test_a_delegate_may_not_outlive_its_delegator() -> None:
    found = evaluate(facts(delegate(ttl="5m"), delegator=planner(chain=["user:alice"], expires="2026-11-28T12:01:00Z")))
    assert rules(found) == ["delegate-not-outliving"]
    assert "expires at 2026-11-28T12:01:00Z" in found[0].message


def test_delegation_depth_counts_agents_above() -> None:
    assert delegation_depth(None) == 0
    assert delegation_depth(planner(chain=["user:alice"])) == 1
    assert delegation_depth(planner(chain=["user:alice", "agent:support/lead"])) == 2
    found = evaluate(facts(delegate(), delegator=planner(chain=["user:alice", "agent:support/lead"])))
    assert rules(found) == ["delegation-depth"]
    assert "depth 2 exceeds profile 'standard' maxDelegationDepth 1" in found[0].message


def test_every_violation_is_reported_not_just_the_first() -> None:
    agent = identity(ttl="10m", scopes=[{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}])
    assert rules(evaluate(facts(agent, creator=None))) == ["ttl-within-profile", "scopes-within-ceiling", "creator-known"]


def test_identity_defining_fields_never_change() -> None:
    old = identity(scopes=[CM_GET]).spec
    assert unchanged_on_update(old, old) is None
    changed = unchanged_on_update(old, identity(scopes=[CM_GET], task="other", ttl="10m").spec)
    assert changed is not None and changed.message.startswith("spec.task, spec.ttl:")


def test_a_creator_stamp_round_trips_and_garbage_is_no_creator() -> None:
    creator = Creator(username="alice", uid="1", groups=("a", "b"))
    stamped = identity(scopes=[CM_GET])
    body = {
        **stamped.body,
        "metadata": {**stamped.body["metadata"], "annotations": {"agentidentity.dev/creator": creator.to_annotation()}},
    }
    assert Creator.from_identity(AgentIdentity.from_body(body)) == creator
    body["metadata"]["annotations"]["agentidentity.dev/creator"] = "{not json"
    assert Creator.from_identity(AgentIdentity.from_body(body)) is None


def test_an_agent_delegator_must_be_in_the_same_namespace() -> None:
    agent = identity(scopes=[CM_GET], delegator={"kind": "AgentIdentity", "name": "planner", "namespace": "other"})
    found = evaluate(facts(agent))
    assert rules(found) == ["delegator-same-namespace"]
    assert "must be in namespace 'support', not 'other'" in found[0].message
