"""Gathers what the policy checks need and judges an identity: the profiles, the chain of
delegating identities above it (through their specs), who created them, and SubjectAccessReviews
of the creator, asked only once every pure check has passed and stopped at the first refusal.
Used by the admission webhook and by the reconciler alike, so both judge on the same facts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Protocol

from pydantic import ValidationError

from agent_identity.api.v1alpha1 import AgentIdentity, AgentProfile
from agent_identity.plan.decisions import parse_identity
from agent_identity.policy.rbac import Permission
from agent_identity.policy.rules import (
    PURE_CHECKS,
    Check,
    Creator,
    Facts,
    Violation,
    agent_username,
    creator_holds_scopes,
    delegator_held,
    delegator_is_creator,
    delegator_username,
    evaluate,
    requested_permissions,
)

ProfileLookup = Callable[[str], dict[str, Any] | None]
IdentityLookup = Callable[[str, str], dict[str, Any] | None]
CreatorOf = Callable[[AgentIdentity], Creator | None]  # the verified creator of an identity
SERVICE_ACCOUNT_PREFIX = "system:serviceaccount:"
AGENT_ACCOUNT_PREFIX = "aid-"


class AccessReviews(Protocol):
    """The one question this module asks the API server (a SubjectAccessReview); ``kube.Kube`` answers it."""

    def may(
        self, *, user: str, groups: tuple[str, ...], uid: str, extra: dict[str, tuple[str, ...]], attributes: dict[str, str]
    ) -> bool: ...


def load_profile(lookup: ProfileLookup, name: str | None) -> AgentProfile | None:
    """The named profile, or None when it is absent or does not parse (the checks say so)."""
    if not name:
        return None
    body = lookup(name)
    if body is None:
        return None
    try:
        return AgentProfile.model_validate(body)
    except ValidationError:
        return None


def profile_of(identity: AgentIdentity, settings: PolicySettings, lookup: ProfileLookup) -> AgentProfile | None:
    """The profile that bounds ``identity``: its ``spec.profile``, else the operator's default."""
    return load_profile(lookup, identity.spec.profile or settings.default_profile)


def _attributes(permission: Permission, namespace: str) -> dict[str, str]:
    resource, _, subresource = permission.resource.partition("/")
    attributes = {"namespace": namespace, "verb": permission.verb, "group": permission.api_group, "resource": resource}
    if subresource:
        attributes["subresource"] = subresource
    if permission.resource_name is not None:
        attributes["name"] = permission.resource_name
    return attributes


def _impersonation(username: str) -> dict[str, str]:
    """The SubjectAccessReview attributes of "may impersonate ``username``"."""
    namespace, _, name = username.removeprefix(SERVICE_ACCOUNT_PREFIX).partition(":")
    if username.startswith(SERVICE_ACCOUNT_PREFIX) and name:
        return {"verb": "impersonate", "group": "", "resource": "serviceaccounts", "namespace": namespace, "name": name}
    return {"verb": "impersonate", "group": "", "resource": "users", "name": username}


def _creator_may(kube: AccessReviews, creator: Creator, attributes: dict[str, str]) -> bool:
    return kube.may(user=creator.username, groups=creator.groups, uid=creator.uid, extra=creator.extra, attributes=attributes)


@dataclass(frozen=True)
class PolicySettings:
    """How strict the operator is, from its flags."""

    require_creator: bool = True  # False only with the unsafe no-webhooks opt-out
    require_profile: bool = False
    default_profile: str | None = None
    operator_namespace: str | None = None
    served_namespaces: tuple[str, ...] = ()  # empty: every namespace


def ancestors(identity: AgentIdentity, lookup: IdentityLookup, *, limit: int = 32) -> tuple[AgentIdentity, ...]:
    """The AgentIdentities above ``identity``, nearest first, followed through their (immutable)
    specs: the chain as written at admission, never as someone may have rewritten a status."""
    found: list[AgentIdentity] = []
    namespace = identity.metadata.namespace
    current, seen = identity, {identity.metadata.name}
    while len(found) < limit:
        delegator = current.spec.delegator
        if delegator is None or delegator.kind != "AgentIdentity" or delegator.namespace_problem(namespace):
            break
        if delegator.name in seen:
            break  # a cycle cannot be created through the webhook; never loop on one
        body = lookup(namespace, delegator.name)
        parsed = parse_identity(body) if body else None
        if not isinstance(parsed, AgentIdentity):
            break
        found.append(parsed)
        seen.add(parsed.metadata.name)
        current = parsed
    return tuple(found)


def chain_of(identity: AgentIdentity, above: tuple[AgentIdentity, ...]) -> tuple[str, ...]:
    """The delegation chain of ``identity``: the principal at the top, then each agent down to its
    direct delegator (RFC 8693 order reversed: outermost first)."""
    namespace = identity.metadata.namespace
    top = above[-1] if above else identity
    root = top.spec.delegator
    head = (root.principal(identity_namespace=namespace),) if root and root.kind != "AgentIdentity" else ()
    return head + tuple(f"agent:{namespace}/{agent.metadata.name}" for agent in reversed(above))


def creator_agent(creator: Creator | None, lookup: IdentityLookup) -> AgentIdentity | None:
    """The agent whose own ServiceAccount created this identity, if that is who the creator is."""
    if creator is None or not creator.username.startswith(SERVICE_ACCOUNT_PREFIX):
        return None
    namespace, _, account = creator.username.removeprefix(SERVICE_ACCOUNT_PREFIX).partition(":")
    if not account.startswith(AGENT_ACCOUNT_PREFIX):
        return None
    body = lookup(namespace, account.removeprefix(AGENT_ACCOUNT_PREFIX))
    parsed = parse_identity(body) if body else None
    return parsed if isinstance(parsed, AgentIdentity) else None


def facts_for(
    identity: AgentIdentity,
    *,
    settings: PolicySettings,
    lookup: IdentityLookup,
    profile_lookup: ProfileLookup,
    creator: Creator | None,
    creator_of: CreatorOf,
    created_at: datetime,
    admission: bool,
) -> Facts:
    """The pure facts: profiles, the chain above (through specs), who created what."""
    above = ancestors(identity, lookup)
    delegator = above[0] if above and identity.spec.delegator and identity.spec.delegator.name == above[0].metadata.name else None
    return Facts(
        identity=identity,
        created_at=created_at,
        profile=profile_of(identity, settings, profile_lookup),
        delegator=delegator,
        creator=creator,
        require_creator=settings.require_creator,
        ancestors=above if delegator else (),
        ancestor_profiles=tuple(profile_of(agent, settings, profile_lookup) for agent in above) if delegator else (),
        delegator_creator=creator_of(delegator) if delegator else None,
        creator_agent=creator_agent(creator, lookup),
        admission=admission,
        require_profile=settings.require_profile,
        operator_namespace=settings.operator_namespace,
    )


def judge(kube: AccessReviews, facts: Facts) -> list[Violation]:
    """Every pure check first; then, only if they all pass, one SubjectAccessReview at a time,
    stopping at the first refusal (admission cost stays bounded by the atom cap)."""
    violations = evaluate(facts, PURE_CHECKS)
    if violations or facts.creator is None:
        return violations
    for gather_step, check in ACCESS_STEPS:
        facts = gather_step(kube, facts)
        violation = check(facts)
        if violation is not None:
            return [violation]
    return []


def _first_lacking(kube: AccessReviews, facts: Facts) -> Facts:
    assert facts.creator is not None
    for permission in requested_permissions(facts.spec.scopes):
        if not _creator_may(kube, facts.creator, _attributes(permission, facts.namespace)):
            return replace(facts, creator_lacks=(permission,))
    return facts


def _may_act_as_delegator(kube: AccessReviews, facts: Facts) -> Facts:
    creator, delegator = facts.creator, facts.spec.delegator
    assert creator is not None
    if delegator is None or delegator.kind == "AgentIdentity":
        return facts
    username = delegator_username(delegator, facts.namespace)
    may = creator.username == username or _creator_may(kube, creator, _impersonation(username))
    return replace(facts, creator_may_act_as_delegator=may)


def _holds_delegator(kube: AccessReviews, facts: Facts) -> Facts:
    creator, delegator, owner = facts.creator, facts.delegator, facts.delegator_creator
    assert creator is not None
    if delegator is None:
        return facts
    held = (
        creator.username == agent_username(facts.namespace, delegator.metadata.name)
        or (owner is not None and creator.username == owner.username)
        or (owner is not None and _creator_may(kube, creator, _impersonation(owner.username)))
    )
    return replace(facts, creator_holds_delegator=held)


ACCESS_STEPS: tuple[tuple[Callable[[AccessReviews, Facts], Facts], Check], ...] = (
    (_first_lacking, creator_holds_scopes),
    (_may_act_as_delegator, delegator_is_creator),
    (_holds_delegator, delegator_held),
)
