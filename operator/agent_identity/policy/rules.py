"""Least privilege, enforced: one chain of small pure checks shared by the validating webhook and
the reconciler (defence in depth: an object that got past a missing webhook is Denied, not
provisioned).

Each check takes the gathered facts and returns ``None`` or a :class:`Violation` naming the rule
and the reason. The facts that need the API server (the profile, the delegator, what the creator
may do according to SubjectAccessReview) are gathered by the caller; nothing here does I/O.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agent_identity.api.durations import format_duration, format_timestamp, parse_ttl
from agent_identity.api.v1alpha1 import AgentIdentity, AgentIdentitySpec, AgentProfile, Delegator, PolicyRule
from agent_identity.plan.children import ANNOTATION_CREATOR
from agent_identity.plan.decisions import TTL_REQUIRED, effective_ttl, lineage_expires_at, no_ttl_to_give
from agent_identity.policy.rbac import Permission, atoms, uncovered
from agent_identity.policy.rbac import atoms_within_cap as rbac_atoms_within_cap


class Creator(BaseModel):
    """Who created the identity, as the admission request's userInfo said (stamped by the
    mutating webhook; a client-supplied value is always overwritten)."""

    model_config = ConfigDict(frozen=True, populate_by_name=True)

    username: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: dict[str, tuple[str, ...]] = Field(default_factory=dict)

    def to_annotation(self) -> str:
        return json.dumps(self.model_dump(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_identity(cls, identity: AgentIdentity) -> Creator | None:
        stamp = identity.metadata.annotations.get(ANNOTATION_CREATOR)
        if not stamp:
            return None
        try:
            return cls.model_validate_json(stamp)
        except ValidationError:
            return None


@dataclass(frozen=True)
class Violation:
    rule: str  # a stable name, e.g. "scopes-within-ceiling"
    message: str  # names the field and says why

    def __str__(self) -> str:
        return f"{self.rule}: {self.message}"


@dataclass(frozen=True)
class Facts:
    """Everything the checks need, gathered by the webhook or the reconciler."""

    identity: AgentIdentity
    created_at: datetime  # creationTimestamp, or the admission time for a create
    profile: AgentProfile | None
    delegator: AgentIdentity | None  # the delegating AgentIdentity, if that is the delegator's kind
    creator: Creator | None
    require_creator: bool  # False only when the operator runs without its webhooks (unsafe)
    # The AgentIdentities above this one, nearest first, found through their specs (never status).
    ancestors: tuple[AgentIdentity, ...] = ()
    ancestor_profiles: tuple[AgentProfile | None, ...] = ()  # the profile of each ancestor, in the same order
    delegator_creator: Creator | None = None  # who created the delegating AgentIdentity (sealed)
    creator_agent: AgentIdentity | None = None  # the agent whose ServiceAccount is the creator
    admission: bool = False  # judged by the webhook at create (the delegator must be Ready now)
    require_profile: bool = False
    operator_namespace: str | None = None  # the webhooks do not cover it: nothing is provisioned there
    # What SubjectAccessReview said, gathered only once every pure check has passed:
    creator_lacks: tuple[Permission, ...] = ()  # the first requested permission refused the creator
    creator_may_act_as_delegator: bool = False  # creator may impersonate a User/ServiceAccount delegator
    creator_holds_delegator: bool = False  # creator may name the AgentIdentity delegator

    @property
    def spec(self) -> AgentIdentitySpec:
        return self.identity.spec

    @property
    def namespace(self) -> str:
        return self.identity.metadata.namespace

    @property
    def chain_profiles(self) -> tuple[AgentProfile, ...]:
        """This identity's profile and every profile above it: the strictest of each bound wins."""
        return tuple(profile for profile in (self.profile, *self.ancestor_profiles) if profile is not None)

    @property
    def delegator_expires_at(self) -> datetime | None:
        """The delegating AgentIdentity's deadline, from the specs and creation times of the chain
        above (never from its status); None when it has no TTL to give."""
        return lineage_expires_at(self.ancestors or ((self.delegator,) if self.delegator else ()), self.ancestor_profiles)


Check = Callable[[Facts], Violation | None]


def delegation_depth(ancestors: tuple[AgentIdentity, ...]) -> int:
    """Agents above this one: 0 for an identity a person or workload delegated directly."""
    return len(ancestors)


def agent_username(namespace: str, name: str) -> str:
    """The username an agent's own ServiceAccount authenticates as."""
    return f"system:serviceaccount:{namespace}:aid-{name}"


def delegator_username(delegator: Delegator, namespace: str) -> str:
    """The username a User or ServiceAccount delegator authenticates as."""
    if delegator.kind == "User":
        return delegator.name
    return f"system:serviceaccount:{delegator.namespace or namespace}:{delegator.name}"


def _within(owner: list[PolicyRule], facts: Facts, rule: str, whose: str) -> Violation | None:
    beyond = uncovered(owner, facts.spec.scopes)
    return Violation(rule, f"spec.scopes: {_list(beyond)} exceed {whose}") if beyond else None


def _list(permissions: list[Permission] | tuple[Permission, ...]) -> str:
    shown = [p.describe() for p in permissions[:5]]
    more = f" and {len(permissions) - 5} more" if len(permissions) > 5 else ""
    return "; ".join(shown) + more


# -- the checks, in the order their messages are reported ---------------------------------------


def profile_exists(facts: Facts) -> Violation | None:
    # A named profile must exist: an identity never falls back to "no limits" by a typo.
    if facts.spec.profile and facts.profile is None:
        return Violation("profile-exists", f"spec.profile: AgentProfile {facts.spec.profile!r} does not exist")
    return None


def namespace_allowed(facts: Facts) -> Violation | None:
    # A profile may be reserved for some namespaces.
    if facts.profile and facts.profile.spec.namespaces is not None and facts.namespace not in facts.profile.spec.namespaces:
        return Violation(
            "namespace-allowed",
            f"metadata.namespace: profile {facts.profile.name!r} may not be used in namespace {facts.namespace!r}",
        )
    return None


def delegator_required(facts: Facts) -> Violation | None:
    # Some profiles only issue identities that act for someone.
    if facts.profile and facts.profile.spec.require_delegator and facts.spec.delegator is None:
        return Violation("delegator-required", f"spec.delegator: profile {facts.profile.name!r} requires a delegator")
    return None


def namespace_served(facts: Facts) -> Violation | None:
    # The webhooks exclude the operator's own namespace (so a broken operator can be repaired):
    # nobody's creator can be verified there, so nothing is ever provisioned there.
    if facts.operator_namespace is not None and facts.namespace == facts.operator_namespace:
        return Violation(
            "namespace-served",
            f"metadata.namespace: {facts.namespace!r} is the operator's own namespace, which its admission "
            "webhooks do not cover; create AgentIdentities in a served namespace",
        )
    return None


def profile_required(facts: Facts) -> Violation | None:
    # With --require-profile every identity is bound by some profile's limits.
    if facts.require_profile and facts.profile is None and not facts.spec.profile:
        return Violation("profile-required", "spec.profile: required (the operator runs with --require-profile)")
    return None


def atoms_within_cap(facts: Facts) -> Violation | None:
    # Admission stays cheap: one identity never expands to more permissions than we will check.
    message = rbac_atoms_within_cap(facts.spec.scopes)
    return Violation("scopes-bounded", message) if message else None


def ttl_within_profile(facts: Facts) -> Violation | None:
    # The TTL must exist and fit the maximum of every profile on the chain.
    ttl = effective_ttl(facts.identity, facts.profile)
    if ttl is None:
        return Violation("ttl-set", TTL_REQUIRED)
    for profile in facts.chain_profiles:
        max_ttl = parse_ttl(profile.spec.max_ttl)
        if ttl > max_ttl:
            return Violation(
                "ttl-within-profile",
                f"spec.ttl: {format_duration(ttl)} exceeds {_whose(facts, profile)} maxTTL {format_duration(max_ttl)}",
            )
    return None


def scopes_within_ceiling(facts: Facts) -> Violation | None:
    # Never more than any profile on the chain allows an agent of its kind.
    for profile in facts.chain_profiles:
        violation = _within(
            profile.spec.permission_ceiling, facts, "scopes-within-ceiling", f"the permissionCeiling of {_whose(facts, profile)}"
        )
        if violation:
            return violation
    return None


def audiences_allowed(facts: Facts) -> Violation | None:
    # Tokens only for audiences every profile on the chain names (the API server's own is always allowed).
    audiences = facts.spec.audiences
    for profile in facts.chain_profiles:
        if profile.spec.audiences is None:
            continue
        refused = [audience for audience in audiences if audience not in profile.spec.audiences]
        if refused:
            return Violation(
                "audiences-allowed", f"spec.token.audiences: {', '.join(refused)} not allowed by {_whose(facts, profile)}"
            )
    return None


def delegation_depth_allowed(facts: Facts) -> Violation | None:
    # Chains of agents are bounded by the strictest profile on them.
    depth = delegation_depth(facts.ancestors)
    for profile in facts.chain_profiles:
        if depth > profile.spec.max_delegation_depth:
            return Violation(
                "delegation-depth",
                f"spec.delegator: delegation depth {depth} exceeds {_whose(facts, profile)} "
                f"maxDelegationDepth {profile.spec.max_delegation_depth}",
            )
    return None


def _whose(facts: Facts, profile: AgentProfile) -> str:
    own = facts.profile is not None and profile.name == facts.profile.name
    return f"profile {profile.name!r}" + ("" if own else " (on the delegation chain above)")


def creator_known(facts: Facts) -> Violation | None:
    # Without a creator stamp nobody can say whose permissions the agent would borrow.
    if facts.require_creator and facts.creator is None:
        return Violation(
            "creator-known",
            f"metadata.annotations[{ANNOTATION_CREATOR}]: no creator recorded (the admission webhook did not run)",
        )
    return None


def agent_delegates_as_itself(facts: Facts) -> Violation | None:
    # An agent creating an identity is delegating: the new identity continues its chain.
    agent, delegator = facts.creator_agent, facts.spec.delegator
    if agent is None or (delegator is not None and delegator.kind == "AgentIdentity"):
        return None
    named = f"{delegator.kind} {delegator.name}" if delegator else "no delegator"
    return Violation(
        "agent-delegates-as-itself",
        f"spec.delegator: agent {facts.namespace}/{agent.metadata.name} may only create identities it delegates to "
        f"(delegator AgentIdentity {agent.metadata.name}, or one it holds), not {named}",
    )


def delegator_same_namespace(facts: Facts) -> Violation | None:
    # An agent delegates only within its own namespace.
    problem = facts.spec.delegator.namespace_problem(facts.namespace) if facts.spec.delegator else None
    return Violation("delegator-same-namespace", problem) if problem else None


def delegator_ready(facts: Facts) -> Violation | None:
    # At admission the delegating identity exists and is Ready: nobody squats on a name created
    # later. Its phase is believed only to refuse; how long it lives is delegate_not_outliving's.
    delegator = facts.spec.delegator
    if not facts.admission or delegator is None or delegator.kind != "AgentIdentity":
        return None
    if facts.delegator is None:
        return Violation("delegator-ready", f"spec.delegator: AgentIdentity {facts.namespace}/{delegator.name} does not exist")
    phase = facts.delegator.status.phase or "Pending"
    if phase != "Ready":
        return Violation(
            "delegator-ready",
            f"spec.delegator: AgentIdentity {facts.namespace}/{delegator.name} is {phase}, not Ready: "
            "create the delegate once its delegator is Ready",
        )
    return None


def delegate_within_delegator(facts: Facts) -> Violation | None:
    # Delegation only narrows: a delegate holds a subset of its delegator's scopes.
    if facts.delegator is None:
        return None
    return _within(
        facts.delegator.spec.scopes,
        facts,
        "delegate-within-delegator",
        f"the scopes of delegator {facts.delegator.metadata.name!r}",
    )


def delegate_not_outliving(facts: Facts) -> Violation | None:
    # A delegate never outlives its delegator, whose deadline comes from the specs above (a
    # rewritten status never lengthens it).
    ttl = effective_ttl(facts.identity, facts.profile)
    if facts.delegator is None or ttl is None:
        return None
    deadline = facts.delegator_expires_at
    if deadline is None:
        return Violation("delegate-not-outliving", no_ttl_to_give(facts.namespace, facts.delegator.metadata.name))
    if facts.created_at + ttl > deadline:
        return Violation(
            "delegate-not-outliving",
            f"spec.ttl: {format_duration(ttl)} would outlive delegator {facts.delegator.metadata.name!r}, "
            f"which expires at {format_timestamp(deadline)}",
        )
    return None


# -- the checks that need SubjectAccessReview answers (gathered only when every pure check passed) --


def creator_holds_scopes(facts: Facts) -> Violation | None:
    # No one can hand an agent a permission they do not hold themselves.
    if facts.creator_lacks and facts.creator is not None:
        return Violation(
            "creator-holds-scopes",
            f"spec.scopes: {facts.creator.username} may not {_list(facts.creator_lacks)} in namespace {facts.namespace!r}",
        )
    return None


def delegator_is_creator(facts: Facts) -> Violation | None:
    # A person or workload delegator is the creator, or someone allowed to impersonate them.
    delegator, creator = facts.spec.delegator, facts.creator
    if delegator is None or delegator.kind == "AgentIdentity" or creator is None:
        return None
    expected = delegator_username(delegator, facts.namespace)
    if creator.username != expected and not facts.creator_may_act_as_delegator:
        return Violation(
            "delegator-is-creator",
            f"spec.delegator: {creator.username} may not act for {delegator.kind} {expected} "
            "(not the creator, no impersonate permission)",
        )
    return None


def delegator_held(facts: Facts) -> Violation | None:
    # Only those who hold a delegating agent may name it: the agent itself, its creator, or
    # someone allowed to impersonate its creator. Nobody borrows someone else's principal.
    if facts.delegator is None or facts.creator is None or facts.creator_holds_delegator:
        return None
    name = facts.delegator.metadata.name
    return Violation(
        "delegator-held",
        f"spec.delegator: {facts.creator.username} may not name AgentIdentity {name!r} as delegator: only the agent "
        "itself, its creator or someone allowed to impersonate its creator may",
    )


PURE_CHECKS: tuple[Check, ...] = (
    namespace_served,
    atoms_within_cap,
    profile_exists,
    profile_required,
    namespace_allowed,
    delegator_required,
    ttl_within_profile,
    scopes_within_ceiling,
    audiences_allowed,
    creator_known,
    agent_delegates_as_itself,
    delegator_same_namespace,
    delegator_ready,
    delegate_within_delegator,
    delegate_not_outliving,
    delegation_depth_allowed,
)
ACCESS_CHECKS: tuple[Check, ...] = (creator_holds_scopes, delegator_is_creator, delegator_held)


def evaluate(facts: Facts, checks: tuple[Check, ...] = PURE_CHECKS + ACCESS_CHECKS) -> list[Violation]:
    return [violation for check in checks if (violation := check(facts)) is not None]


def requested_permissions(scopes: list[PolicyRule]) -> list[Permission]:
    """The atoms a SubjectAccessReview must confirm the creator holds, deduplicated."""
    return list(dict.fromkeys(atom for rule in scopes for atom in atoms(rule)))


IMMUTABLE_FIELDS = ("task", "ttl", "profile", "delegator", "scopes", "token", "bound_to", "heartbeat")


def unchanged_on_update(old: AgentIdentitySpec, new: AgentIdentitySpec) -> Violation | None:
    """Identity-defining fields never change (the CRD's CEL rules say the same; this is for the
    webhook's message, and for clusters whose CRD is older than the operator)."""
    changed = [name for name in IMMUTABLE_FIELDS if getattr(old, name) != getattr(new, name)]
    if changed:
        return Violation("immutable", f"spec.{', spec.'.join(changed)}: identity-defining fields cannot change")
    if old.done and not new.done:
        return Violation("done-final", "spec.done: cannot be undone: a retired identity stays retired")
    return None
