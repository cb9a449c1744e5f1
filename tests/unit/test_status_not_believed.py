"""Nothing is believed from status: whoever may patch ``agentidentities/status`` (the built-in
``edit`` role may) rewrites ``expiresAt`` and ``phase`` at will, and gains no longer life for an
identity or its delegates. Each test is the attack; pure, no API server."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from agent_identity.admission.identity import Admission, Request, stamp
from agent_identity.api.conditions import Reason
from agent_identity.api.durations import format_timestamp
from agent_identity.api.v1alpha1 import AgentIdentity, AgentProfile
from agent_identity.engine.reconciler import Reconciler, Settings
from agent_identity.keys.keyring import random_material, rotate
from agent_identity.keys.seal import check, seal
from agent_identity.plan.children import ANNOTATION_CREATOR, ANNOTATION_SEAL
from agent_identity.plan.decisions import TTL_REQUIRED, DelegatorView, Deny, Provision, Retire, decide, effective_ttl
from agent_identity.policy.facts import PolicySettings
from agent_identity.policy.rules import Creator, Facts, evaluate

from .factories import CREATED, identity, identity_body
from .fakekube import FakeKube

NS = "support"
CM_GET = {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}
A_YEAR_ON = format_timestamp(CREATED + timedelta(days=365))
# What the attacker writes with `kubectl patch agentidentity --subresource=status`.
FORGED_READY = {"phase": "Ready", "expiresAt": A_YEAR_ON, "serviceAccountUID": "sa-1"}
PLANNER = {"kind": "AgentIdentity", "name": "planner"}


def profile(**changes: Any) -> AgentProfile:
    spec = {"riskLevel": "low", "maxTTL": "1h", "maxDelegationDepth": 2, "permissionCeiling": [CM_GET]} | changes
    return AgentProfile.model_validate(
        {"apiVersion": "agentidentity.dev/v1alpha1", "kind": "AgentProfile", "metadata": {"name": "standard"}, "spec": spec}
    )


# -- (a) a TTL is never taken from status -------------------------------------------------------


def test_an_identity_without_a_ttl_whose_profile_is_gone_does_not_live_by_its_forged_expiry() -> None:
    ageless = identity(ttl=None, delegator=None, profile="standard", scopes=[CM_GET], status=FORGED_READY)
    assert effective_ttl(ageless, None) is None
    decision = decide(ageless, delegator=None, now=CREATED + timedelta(minutes=10), profile=None)
    assert decision == Deny(Reason.INVALID_SPEC, TTL_REQUIRED)


def test_the_reconciler_revokes_such_an_identity_instead_of_keeping_it_a_year() -> None:
    kube = FakeKube()
    kube.identities[(NS, "crawler")] = identity_body(ttl=None, delegator=None, status=FORGED_READY)
    reconciler = Reconciler(
        kube,  # type: ignore[arg-type]
        settings=Settings(policy=PolicySettings(require_creator=False)),
        clock=lambda: CREATED + timedelta(minutes=10),
        lookup_identity=kube.get_identity,
        lookup_profile=kube.get_profile,  # no profile any more
    )
    reconciler.reconcile(kube.get_identity(NS, "crawler") or {})
    status = kube.identities[(NS, "crawler")]["status"]
    assert status["phase"] == "Denied"
    assert status["conditions"][-1]["message"] == TTL_REQUIRED


class RingSealer:
    """The seal as the webhook makes and checks it, keys in memory."""

    def __init__(self, now: datetime) -> None:
        self.now = now
        self.ring = rotate(None, now=now, period=timedelta(days=1), publish_ahead=timedelta(0), new_material=random_material)

    def seal(self, *, namespace: str, name: str, spec: Mapping[str, Any], creator: str) -> str:
        key = self.ring.active(now=self.now, publish_ahead=timedelta(0))
        return seal(key, namespace=namespace, name=name, spec=spec, creator=creator, now=self.now, nonce="n0")

    def problem(self, body: Mapping[str, Any], *, created_at: datetime) -> str | None:
        metadata = body["metadata"]
        annotations = metadata.get("annotations") or {}
        return check(
            self.ring,
            annotations.get(ANNOTATION_SEAL),
            namespace=metadata["namespace"],
            name=metadata["name"],
            spec=body["spec"],
            creator=annotations.get(ANNOTATION_CREATOR),
            created_at=created_at,
        )

    def creator_of(self, identity: AgentIdentity) -> Creator | None:
        return Creator.from_identity(identity)


class AllowEverything:
    def may(self, **_: Any) -> bool:
        return True


def test_admission_writes_the_profiles_default_ttl_into_the_sealed_spec() -> None:
    standard = profile(defaultTTL="5m")
    sealer = RingSealer(CREATED)
    admission = Admission(
        kube=AllowEverything(),  # type: ignore[arg-type]
        reviews=AllowEverything(),
        lookup=lambda namespace, name: None,
        profile_lookup=lambda name: standard.model_dump(by_alias=True) if name == "standard" else None,
        sealer=sealer,
        settings=PolicySettings(),
    )
    body = identity_body(ttl=None, profile="standard", scopes=[CM_GET])
    written = stamp(admission, Request("CREATE", body, None, {"username": "alice"}, CREATED))
    assert written.spec == {"ttl": "5m"}
    stored = {**body, "spec": body["spec"] | written.spec, "metadata": body["metadata"] | {"annotations": written.annotations}}
    assert sealer.problem(stored, created_at=CREATED) is None  # the seal covers the TTL it wrote
    assert sealer.problem({**stored, "spec": body["spec"]}, created_at=CREATED) is not None  # and vouches for no other


# -- (b) a delegator's life comes from its spec and creation time ---------------------------------


def planner(*, ttl: str | None = "1m", status: dict[str, Any] | None = None, **changes: Any) -> AgentIdentity:
    return identity("planner", uid="uid-planner", ttl=ttl, scopes=[CM_GET], status=status or FORGED_READY, **changes)


def crawler(ttl: str = "10m") -> AgentIdentity:
    return identity(ttl=ttl, delegator=PLANNER, scopes=[CM_GET])


def test_a_delegator_with_a_forged_expiry_caps_its_delegate_at_its_real_deadline() -> None:
    decision = decide(crawler(), delegator=DelegatorView(planner()), now=CREATED + timedelta(seconds=10))
    assert isinstance(decision, Provision)
    assert decision.provenance.expires_at == CREATED + timedelta(minutes=1)


def test_a_delegator_past_its_deadline_retires_its_delegate_whatever_its_status_says() -> None:
    decision = decide(crawler(), delegator=DelegatorView(planner()), now=CREATED + timedelta(minutes=1))
    assert isinstance(decision, Retire) and decision.reason == Reason.DELEGATOR_RETIRED
    assert "expired at 2026-11-28T12:01:00Z" in decision.message


def test_a_delegator_without_a_ttl_of_its_own_cannot_delegate_on_a_forged_expiry() -> None:
    decision = decide(crawler(), delegator=DelegatorView(planner(ttl=None)), now=CREATED + timedelta(seconds=10))
    assert isinstance(decision, Deny) and decision.reason == Reason.INVALID_DELEGATOR
    assert "has no TTL to give" in decision.message


def test_a_delegator_is_capped_by_the_specs_above_it_too() -> None:
    lead = identity("lead", uid="uid-lead", ttl="30s", scopes=[CM_GET], status=FORGED_READY)
    middle = planner(ttl="10m", delegator={"kind": "AgentIdentity", "name": "lead"})
    view = DelegatorView(middle, lineage=(middle, lead), profiles=(None, None))
    decision = decide(crawler("5m"), delegator=view, now=CREATED + timedelta(seconds=10))
    assert isinstance(decision, Provision)
    assert decision.provenance.expires_at == CREATED + timedelta(seconds=30)


def delegate_facts(delegator: AgentIdentity, **changes: Any) -> Facts:
    values: dict[str, Any] = {
        "identity": crawler(),
        "created_at": CREATED,
        "profile": None,
        "delegator": delegator,
        "ancestors": (delegator,),
        "creator": Creator(username="alice"),
        "require_creator": True,
        "creator_holds_delegator": True,
        "admission": True,
    }
    return Facts(**(values | changes))


def test_admission_refuses_a_delegate_outliving_a_delegator_whose_expiry_was_forged() -> None:
    found = evaluate(delegate_facts(planner()))
    assert [violation.rule for violation in found] == ["delegate-not-outliving"]
    assert "expires at 2026-11-28T12:01:00Z" in found[0].message


def test_admission_refuses_a_delegate_of_an_expired_delegator_whose_status_says_ready() -> None:
    found = evaluate(delegate_facts(planner(), identity=crawler("10s"), created_at=CREATED + timedelta(minutes=2)))
    assert [violation.rule for violation in found] == ["delegate-not-outliving"]


def test_admission_refuses_a_delegate_of_a_delegator_without_a_ttl_of_its_own() -> None:
    found = evaluate(delegate_facts(planner(ttl=None)))
    assert [violation.rule for violation in found] == ["delegate-not-outliving"]
    assert "has no TTL to give" in found[0].message


def test_the_reconciler_judges_a_delegate_by_the_deadlines_the_specs_above_give() -> None:
    kube = FakeKube()
    lead = identity_body("lead", uid="uid-lead", ttl="30s", scopes=[CM_GET], status=FORGED_READY)
    middle = identity_body(
        "planner", uid="uid-planner", ttl="10m", scopes=[CM_GET], delegator={"kind": "AgentIdentity", "name": "lead"}
    )
    kube.identities[(NS, "lead")], kube.identities[(NS, "planner")] = lead, middle | {"status": FORGED_READY}
    kube.identities[(NS, "crawler")] = identity_body(ttl="5m", delegator=PLANNER, scopes=[CM_GET])
    reconciler = Reconciler(
        kube,  # type: ignore[arg-type]
        settings=Settings(policy=PolicySettings(require_creator=False)),
        clock=lambda: CREATED + timedelta(seconds=10),
        lookup_identity=kube.get_identity,
        lookup_profile=kube.get_profile,
    )
    reconciler.reconcile(kube.get_identity(NS, "crawler") or {})
    status = kube.identities[(NS, "crawler")]["status"]
    assert status["phase"] == "Denied"
    assert "would outlive delegator 'planner', which expires at 2026-11-28T12:00:30Z" in status["conditions"][-1]["message"]
    assert not kube.objects  # nothing was provisioned
