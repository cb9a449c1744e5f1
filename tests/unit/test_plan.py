"""decide(): what an identity should be, table by table, with time injected."""

from datetime import timedelta

import pytest

from agent_identity.api.conditions import Reason
from agent_identity.api.v1alpha1 import AgentIdentity
from agent_identity.plan.decisions import DelegatorView, Deny, Provision, Retire, Wait, decide, parse_identity
from agent_identity.plan.drift import ChildAction, diff_child

from .factories import CREATED, identity, identity_body

AGENT_DELEGATOR = {"kind": "AgentIdentity", "name": "planner"}


def ready_planner(*, ttl: str = "60s") -> DelegatorView:
    """planner, Ready, delegated by alice; the chain is what the walk through the specs found."""
    expires = (CREATED + timedelta(seconds=60)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return DelegatorView(
        identity("planner", uid="uid-planner", ttl=ttl, status={"phase": "Ready", "expiresAt": expires}),
        chain=("user:alice", "agent:support/planner"),
    )


def test_a_user_delegated_identity_is_provisioned_until_creation_plus_ttl() -> None:
    decision = decide(identity(), delegator=None, now=CREATED + timedelta(seconds=1))
    assert isinstance(decision, Provision)
    assert decision.provenance.expires_at == CREATED + timedelta(seconds=90)
    assert decision.provenance.chain == ("user:alice",)
    assert decision.provenance.delegator == "user:alice"
    assert decision.delegator_owner_reference is None


def test_without_a_delegator_the_chain_is_empty() -> None:
    decision = decide(identity(delegator=None), delegator=None, now=CREATED)
    assert isinstance(decision, Provision)
    assert decision.provenance.chain == ()


def test_at_the_deadline_the_identity_retires() -> None:
    decision = decide(identity(), delegator=None, now=CREATED + timedelta(seconds=90))
    assert isinstance(decision, Retire)
    assert decision.reason is Reason.TTL_ELAPSED
    assert decision.provenance.expires_at == CREATED + timedelta(seconds=90)


def test_one_second_before_the_deadline_it_does_not() -> None:
    assert isinstance(decide(identity(), delegator=None, now=CREATED + timedelta(seconds=89)), Provision)


def test_a_delegate_extends_the_chain_is_owned_by_and_capped_by_its_delegator() -> None:
    delegate = identity(ttl="10m", delegator=AGENT_DELEGATOR)
    decision = decide(delegate, delegator=ready_planner(), now=CREATED)
    assert isinstance(decision, Provision)
    assert decision.provenance.chain == ("user:alice", "agent:support/planner")
    assert decision.provenance.expires_at == CREATED + timedelta(seconds=60)
    assert decision.delegator_owner_reference is not None
    assert decision.delegator_owner_reference["uid"] == "uid-planner"
    assert decision.delegator_owner_reference["controller"] is False


def test_a_three_level_chain_records_every_hop() -> None:
    sub = identity("sub", ttl="30s", delegator={"kind": "AgentIdentity", "name": "crawler"})
    crawler = DelegatorView(
        identity(
            "crawler",
            uid="uid-crawler",
            status={"phase": "Ready", "expiresAt": "2026-11-28T12:01:00Z"},
        ),
        chain=("user:alice", "agent:support/planner", "agent:support/crawler"),
    )
    decision = decide(sub, delegator=crawler, now=CREATED)
    assert isinstance(decision, Provision)
    assert decision.provenance.chain == ("user:alice", "agent:support/planner", "agent:support/crawler")


@pytest.mark.parametrize(
    ("view", "expected", "reason", "words"),
    [
        (DelegatorView(None), Wait, Reason.DELEGATOR_NOT_READY, "does not exist"),
        (DelegatorView(identity("planner", status={"phase": "Pending"})), Wait, Reason.DELEGATOR_NOT_READY, "Pending, not Ready"),
        (DelegatorView(identity("planner")), Wait, Reason.DELEGATOR_NOT_READY, "Pending, not Ready"),
        (DelegatorView(identity("planner", status={"phase": "Denied"})), Deny, Reason.INVALID_DELEGATOR, "is Denied"),
        (DelegatorView(identity("planner", status={"phase": "Failed"})), Deny, Reason.INVALID_DELEGATOR, "is Failed"),
        (DelegatorView(identity("planner", status={"phase": "Expired"})), Retire, Reason.DELEGATOR_RETIRED, "retire with it"),
        (DelegatorView(identity("planner", status={"phase": "Revoked"})), Retire, Reason.DELEGATOR_RETIRED, "is Revoked"),
    ],
)
def test_a_delegate_follows_its_delegators_state(view: DelegatorView, expected: type, reason: Reason, words: str) -> None:
    decision = decide(identity(delegator=AGENT_DELEGATOR), delegator=view, now=CREATED)
    assert isinstance(decision, expected)
    assert decision.reason is reason  # type: ignore[union-attr]
    assert words in decision.message  # type: ignore[union-attr]


def test_a_delegator_in_another_namespace_is_denied_naming_the_field() -> None:
    decision = decide(identity(delegator={**AGENT_DELEGATOR, "namespace": "other"}), delegator=None, now=CREATED)
    assert isinstance(decision, Deny)
    assert decision.message.startswith("spec.delegator:")
    assert "'support'" in decision.message


def test_an_identity_cannot_delegate_to_itself() -> None:
    decision = decide(identity(delegator={"kind": "AgentIdentity", "name": "crawler"}), delegator=None, now=CREATED)
    assert isinstance(decision, Deny)
    assert "itself" in decision.message


def test_a_ttl_the_schema_should_have_refused_is_denied_not_provisioned() -> None:
    decision = decide(identity(ttl="48h"), delegator=None, now=CREATED)
    assert isinstance(decision, Deny)
    assert decision.reason is Reason.INVALID_SPEC
    assert decision.message.startswith("spec.ttl:")


def test_an_unparseable_object_yields_a_reason_naming_the_field() -> None:
    body = identity_body(scopes=[{"apiGroups": [""], "resources": ["pods"]}])
    reason = parse_identity(body)
    assert isinstance(reason, str)
    assert reason.startswith("spec.scopes.0.verbs")


READY_PLANNER = {"phase": "Ready", "expiresAt": "2026-11-28T12:10:00Z", "delegationChain": ["user:alice"]}


def provisioned_delegate(owner_uid: str | None = "uid-planner") -> AgentIdentity:
    body = identity_body(delegator=AGENT_DELEGATOR, status={"phase": "Ready", "serviceAccountUID": "sa-1"})
    if owner_uid:
        body["metadata"]["ownerReferences"] = [{"kind": "AgentIdentity", "name": "planner", "uid": owner_uid}]
    return AgentIdentity.from_body(body)


@pytest.mark.parametrize(
    ("delegate", "view", "why"),
    [
        (provisioned_delegate(), DelegatorView(None), "deleted outright"),
        (provisioned_delegate(owner_uid=None), DelegatorView(None), "orphaned: ownerReference stripped, delegator gone"),
        (
            provisioned_delegate(),
            DelegatorView(identity("planner", uid="uid-planner-2", status=READY_PLANNER)),
            "deleted and re-created under the same name",
        ),
        (
            provisioned_delegate(),
            DelegatorView(
                AgentIdentity.from_body(
                    {
                        **identity_body("planner", uid="uid-planner", status=READY_PLANNER),
                        "metadata": {
                            **identity_body("planner", uid="uid-planner")["metadata"],
                            "deletionTimestamp": "2026-11-28T12:00:30Z",
                        },
                    }
                )
            ),
            "being deleted (a finalizer holds it)",
        ),
    ],
)
def test_a_provisioned_delegate_whose_delegator_is_gone_is_revoked_at_once(
    delegate: AgentIdentity, view: DelegatorView, why: str
) -> None:
    decision = decide(delegate, delegator=view, now=CREATED)
    assert isinstance(decision, Retire), why
    assert decision.phase == "Revoked" and decision.reason is Reason.DELEGATOR_GONE
    assert decision.provenance.expires_at == CREATED


def test_the_chain_comes_from_the_specs_above_when_given_not_the_delegators_status() -> None:
    forged = identity("planner", uid="uid-planner", status={**READY_PLANNER, "delegationChain": ["user:mallory"]})
    decision = decide(
        identity(delegator=AGENT_DELEGATOR, ttl="60s"),
        delegator=DelegatorView(forged, chain=("user:alice", "agent:support/planner")),
        now=CREATED,
    )
    assert isinstance(decision, Provision)
    assert decision.provenance.chain == ("user:alice", "agent:support/planner")


def test_a_child_whose_owner_reference_was_stripped_is_still_ours_by_its_recorded_uid() -> None:
    desired = {"metadata": {"name": "aid-crawler", "ownerReferences": [{"uid": "uid-crawler"}]}, "rules": []}
    stripped = {"metadata": {"name": "aid-crawler", "uid": "role-1"}, "rules": []}
    assert diff_child(desired, stripped, owner_uid="uid-crawler", recorded_uid="role-1") is ChildAction.UPDATE
    assert diff_child(desired, stripped, owner_uid="uid-crawler", recorded_uid="other") is ChildAction.CONFLICT
    assert diff_child(desired, stripped, owner_uid="uid-crawler") is ChildAction.CONFLICT
