"""The policy chain, check by check, with facts built by hand (no API server)."""

from __future__ import annotations

from typing import Any

import pytest

from agent_identity.api.v1alpha1 import AgentIdentity, AgentProfile
from agent_identity.policy.rbac import Permission
from agent_identity.policy.rules import PURE_CHECKS, Creator, Facts, Violation, delegation_depth, evaluate, unchanged_on_update

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


def planner(*, chain: list[str], ttl: str = "10m", expires: str = "2026-11-28T12:10:00Z") -> AgentIdentity:
    return identity(
        "planner",
        uid="uid-planner",
        scopes=[CM_GET],
        ttl=ttl,
        status={"phase": "Ready", "expiresAt": expires, "delegationChain": chain},
    )


def delegate(**changes: Any) -> AgentIdentity:
    values: dict[str, Any] = {"scopes": [CM_GET], "ttl": "60s", "delegator": {"kind": "AgentIdentity", "name": "planner"}}
    values.update(changes)
    return identity("crawler", **values)


def delegated(agent: AgentIdentity, *above: AgentIdentity, **changes: Any) -> Facts:
    """Facts of ``agent`` under the chain ``above`` (nearest first), named by its holder."""
    values: dict[str, Any] = {"delegator": above[0], "ancestors": above, "creator_holds_delegator": True}
    return facts(agent, **(values | changes))


def test_delegation_only_narrows() -> None:
    wider = delegate(scopes=[{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}])
    found = evaluate(delegated(wider, planner(chain=["user:alice"])))
    assert rules(found) == ["delegate-within-delegator"]
    assert "list configmaps (core group)" in found[0].message


def test_a_delegate_may_not_outlive_its_delegator() -> None:
    found = evaluate(delegated(delegate(ttl="5m"), planner(chain=["user:alice"], ttl="1m", expires="2026-11-28T12:01:00Z")))
    assert rules(found) == ["delegate-not-outliving"]
    assert "expires at 2026-11-28T12:01:00Z" in found[0].message


def test_delegation_depth_counts_agents_above_through_specs_not_status() -> None:
    lead = identity("lead", uid="uid-lead", scopes=[CM_GET], status={"phase": "Ready", "expiresAt": "2026-11-28T12:10:00Z"})
    # The planner's status claims a short chain; the specs above it are what count.
    forged = planner(chain=["user:alice"])
    assert delegation_depth(()) == 0
    assert delegation_depth((forged,)) == 1
    assert delegation_depth((forged, lead)) == 2
    found = evaluate(delegated(delegate(), forged, lead))
    assert rules(found) == ["delegation-depth"]
    assert "depth 2 exceeds profile 'standard' maxDelegationDepth 1" in found[0].message


def test_a_delegate_cannot_escape_a_stricter_profile_above_by_naming_a_laxer_one() -> None:
    lax = profile(maxTTL="1h", maxDelegationDepth=5, audiences=["vault", "s3"])
    strict = profile(maxTTL="5m", maxDelegationDepth=0, audiences=["vault"])
    strict = AgentProfile.model_validate({**strict.model_dump(by_alias=True), "metadata": {"name": "strict"}})
    above = planner(chain=["user:alice"])
    found = evaluate(delegated(delegate(ttl="10m", token={"audiences": ["s3"]}), above, profile=lax, ancestor_profiles=(strict,)))
    assert rules(found) == ["ttl-within-profile", "audiences-allowed", "delegation-depth"]
    assert all("profile 'strict' (on the delegation chain above)" in violation.message for violation in found)


def test_only_a_holder_of_the_delegator_may_name_it() -> None:
    above = planner(chain=["user:alice"])
    found = evaluate(delegated(delegate(), above, creator_holds_delegator=False, delegator_creator=Creator(username="carol")))
    assert rules(found) == ["delegator-held"]
    assert "only the agent itself, its creator or someone allowed" in found[0].message
    assert "carol" not in found[0].message  # who created the delegator is not the requester's to learn


def test_an_agent_creating_an_identity_delegates_as_itself() -> None:
    agent = planner(chain=["user:alice"])
    found = evaluate(facts(identity(scopes=[CM_GET], delegator={"kind": "User", "name": "alice"}), creator_agent=agent))
    assert rules(found) == ["agent-delegates-as-itself"]
    assert "agent support/planner may only create identities it delegates to" in found[0].message
    assert evaluate(delegated(delegate(), agent, creator_agent=agent)) == []


def test_at_admission_the_delegator_exists_and_is_ready() -> None:
    missing = evaluate(facts(delegate(), admission=True))
    assert rules(missing) == ["delegator-ready"] and "does not exist" in missing[0].message
    pending = identity("planner", uid="uid-planner", scopes=[CM_GET], status={"phase": "Pending"})
    found = evaluate(delegated(delegate(), pending, admission=True))
    assert rules(found) == ["delegator-ready"] and "is Pending, not Ready" in found[0].message


def test_nothing_is_provisioned_in_the_operators_own_namespace() -> None:
    found = evaluate(facts(operator_namespace="support"))
    assert rules(found) == ["namespace-served"]
    assert "operator's own namespace" in found[0].message
    assert evaluate(facts(operator_namespace="agent-identity-system")) == []


def test_require_profile_refuses_an_identity_without_one() -> None:
    found = evaluate(facts(identity(scopes=[CM_GET], ttl="1m"), profile=None, require_profile=True))
    assert rules(found) == ["profile-required"]
    assert evaluate(facts(identity(scopes=[CM_GET], ttl="1m"), profile=None)) == []


def test_an_over_wide_spec_is_refused_before_any_access_review() -> None:
    wide = {"apiGroups": ["", "apps"], "resources": [f"r{i}" for i in range(9)], "verbs": ["get", "list", "watch", "update"]}
    found = evaluate(facts(identity(scopes=[wide])), PURE_CHECKS)
    assert rules(found)[0] == "scopes-bounded"
    assert "72" in found[0].message and "at most 64" in found[0].message


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
