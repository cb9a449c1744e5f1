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
from datetime import datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .api import AgentIdentity, AgentIdentitySpec, AgentProfile, Delegator, PolicyRule
from .builders import ANNOTATION_CREATOR
from .durations import InvalidTTLError, format_duration, format_timestamp, parse_timestamp, parse_ttl
from .rbac import Permission, atoms, uncovered


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
    require_creator: bool  # False only when the operator runs without its webhooks
    creator_lacks: tuple[Permission, ...] = ()  # requested atoms SubjectAccessReview refused the creator
    creator_may_act_as_delegator: bool = False  # creator may impersonate a User/ServiceAccount delegator

    @property
    def spec(self) -> AgentIdentitySpec:
        return self.identity.spec

    @property
    def namespace(self) -> str:
        return self.identity.metadata.namespace


Check = Callable[[Facts], Violation | None]


def effective_ttl(spec: AgentIdentitySpec, profile: AgentProfile | None) -> timedelta | None:
    """``spec.ttl``, else the profile's default; None when neither is set (or parseable)."""
    text = spec.ttl or (profile.spec.default_ttl if profile else None)
    if text is None:
        return None
    try:
        return parse_ttl(text)
    except InvalidTTLError:
        return None


def delegation_depth(delegator: AgentIdentity | None) -> int:
    """Agents above this one: 0 for an identity a person or workload delegated directly."""
    if delegator is None:
        return 0
    chain = delegator.status.delegation_chain or []
    return 1 + sum(1 for principal in chain if principal.startswith("agent:"))


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


def ttl_within_profile(facts: Facts) -> Violation | None:
    # The TTL must exist and fit the profile's maximum.
    ttl = effective_ttl(facts.spec, facts.profile)
    if ttl is None:
        return Violation("ttl-set", "spec.ttl: required (no profile defaultTTL applies)")
    if facts.profile is not None:
        max_ttl = parse_ttl(facts.profile.spec.max_ttl)
        if ttl > max_ttl:
            return Violation(
                "ttl-within-profile",
                f"spec.ttl: {format_duration(ttl)} exceeds profile {facts.profile.name!r} maxTTL {format_duration(max_ttl)}",
            )
    return None


def scopes_within_ceiling(facts: Facts) -> Violation | None:
    # Never more than the profile allows any agent of its kind.
    if facts.profile is None:
        return None
    return _within(
        facts.profile.spec.permission_ceiling,
        facts,
        "scopes-within-ceiling",
        f"the permissionCeiling of profile {facts.profile.name!r}",
    )


def audiences_allowed(facts: Facts) -> Violation | None:
    # Tokens only for audiences the profile names (the API server's own is always allowed).
    audiences = facts.spec.token.audiences if facts.spec.token and facts.spec.token.audiences else []
    allowed = set(facts.profile.spec.audiences or []) if facts.profile else None
    if allowed is None:
        return None
    refused = [audience for audience in audiences if audience not in allowed]
    if refused:
        return Violation(
            "audiences-allowed",
            f"spec.token.audiences: {', '.join(refused)} not allowed by profile {facts.profile.name!r}",  # type: ignore[union-attr]
        )
    return None


def creator_known(facts: Facts) -> Violation | None:
    # Without a creator stamp nobody can say whose permissions the agent would borrow.
    if facts.require_creator and facts.creator is None:
        return Violation(
            "creator-known",
            f"metadata.annotations[{ANNOTATION_CREATOR}]: no creator recorded (the admission webhook did not run)",
        )
    return None


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


def delegator_same_namespace(facts: Facts) -> Violation | None:
    # An agent delegates only within its own namespace.
    delegator = facts.spec.delegator
    if delegator is not None and delegator.kind == "AgentIdentity" and delegator.namespace not in (None, facts.namespace):
        return Violation(
            "delegator-same-namespace",
            f"spec.delegator: an AgentIdentity delegator must be in namespace {facts.namespace!r}, not {delegator.namespace!r}",
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
    # A delegate never outlives its delegator.
    ttl = effective_ttl(facts.spec, facts.profile)
    if facts.delegator is None or ttl is None or facts.delegator.status.expires_at is None:
        return None
    deadline = parse_timestamp(facts.delegator.status.expires_at)
    if facts.created_at + ttl > deadline:
        return Violation(
            "delegate-not-outliving",
            f"spec.ttl: {format_duration(ttl)} would outlive delegator {facts.delegator.metadata.name!r}, "
            f"which expires at {format_timestamp(deadline)}",
        )
    return None


def delegation_depth_allowed(facts: Facts) -> Violation | None:
    # Chains of agents are bounded by the profile.
    if facts.profile is None:
        return None
    depth = delegation_depth(facts.delegator)
    if depth > facts.profile.spec.max_delegation_depth:
        return Violation(
            "delegation-depth",
            f"spec.delegator: delegation depth {depth} exceeds profile {facts.profile.name!r} "
            f"maxDelegationDepth {facts.profile.spec.max_delegation_depth}",
        )
    return None


CHECKS: tuple[Check, ...] = (
    profile_exists,
    namespace_allowed,
    delegator_required,
    ttl_within_profile,
    scopes_within_ceiling,
    audiences_allowed,
    creator_known,
    creator_holds_scopes,
    delegator_is_creator,
    delegator_same_namespace,
    delegate_within_delegator,
    delegate_not_outliving,
    delegation_depth_allowed,
)


def evaluate(facts: Facts) -> list[Violation]:
    return [violation for check in CHECKS if (violation := check(facts)) is not None]


def requested_permissions(scopes: list[PolicyRule]) -> list[Permission]:
    """The atoms a SubjectAccessReview must confirm the creator holds, deduplicated."""
    return list(dict.fromkeys(atom for rule in scopes for atom in atoms(rule)))


IMMUTABLE_FIELDS = ("task", "ttl", "profile", "delegator", "scopes", "token")


def unchanged_on_update(old: AgentIdentitySpec, new: AgentIdentitySpec) -> Violation | None:
    """Identity-defining fields never change (the CRD's CEL rules say the same; this is for the
    webhook's message, and for clusters whose CRD is older than the operator)."""
    changed = [name for name in IMMUTABLE_FIELDS if getattr(old, name) != getattr(new, name)]
    if changed:
        return Violation("immutable", f"spec.{', spec.'.join(changed)}: identity-defining fields cannot change")
    return None
