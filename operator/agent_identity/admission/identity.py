"""What the admission webhooks decide. The kopf handlers in ``main`` are one line each.

- mutating, on create: resolve the TTL into ``spec.ttl`` (the profile's ``defaultTTL`` when the
  spec names none), judge the object as it will be stored (the policy chain, with the facts
  gathered exactly as the reconciler gathers them), then stamp the creator from the request's
  userInfo and seal the stamp to this object, its TTL included (see :mod:`seal`); refuse with
  every rule named;
- validating: the seal holds for the object as stored (nothing changed it after us), and
  identity-defining fields never change on update.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from agent_identity.api.durations import format_timestamp
from agent_identity.api.v1alpha1 import AgentIdentity
from agent_identity.keys.seal import Sealer
from agent_identity.kube.client import Kube
from agent_identity.plan.children import ANNOTATION_CREATOR, ANNOTATION_SEAL, LABEL_PROFILE, LABEL_RISK_LEVEL
from agent_identity.plan.decisions import parse_identity, ttl_text
from agent_identity.policy.facts import (
    AccessReviews,
    IdentityLookup,
    PolicySettings,
    ProfileLookup,
    creator_agent,
    facts_for,
    judge,
    profile_of,
)
from agent_identity.policy.rules import Creator, Violation, unchanged_on_update

MUTATE_PATH = "mutate-identity"
VALIDATE_PATH = "validate-identity"


def creator_from_userinfo(userinfo: Mapping[str, Any]) -> Creator:
    return Creator(
        username=str(userinfo.get("username", "")),
        uid=str(userinfo.get("uid", "")),
        groups=tuple(userinfo.get("groups") or ()),
        extra={key: tuple(values) for key, values in (userinfo.get("extra") or {}).items()},
    )


@dataclass(frozen=True)
class Admission:
    """What both webhooks need: the API, the cached lookups, the seal keys and the operator's rules."""

    kube: Kube
    reviews: AccessReviews  # SubjectAccessReviews, answered from a short cache (admission.reviews)
    lookup: IdentityLookup
    profile_lookup: ProfileLookup
    sealer: Sealer
    settings: PolicySettings
    signing: bool = False  # assertions are signed: agent pods get theirs mounted


@dataclass(frozen=True)
class Request:
    """One admission request, as every webhook reads it."""

    operation: str  # CREATE, UPDATE
    body: Mapping[str, Any]  # the object as it will be stored
    old: Mapping[str, Any] | None  # on UPDATE
    userinfo: Mapping[str, Any]  # who asks
    now: datetime


@dataclass(frozen=True)
class Stamp:
    """What the mutating webhook writes: a ``None`` value removes the key."""

    annotations: dict[str, str | None]
    labels: dict[str, str | None]
    spec: dict[str, Any]  # spec fields to set (the default profile and its TTL; an agent creator as delegator)


class Refused(Exception):
    def __init__(self, violations: list[Violation], *, subject: str = "AgentIdentity") -> None:
        super().__init__(denial_message(violations, subject=subject))
        self.violations = violations


def stamp(admission: Admission, request: Request) -> Stamp:
    """On create: judge the object as it will be stored, then stamp and seal its creator. The
    creator comes from the request's userInfo, never from the client; on update the stamp and
    seal are put back to what create wrote (or removed if there were none)."""
    body, now = request.body, request.now
    if request.operation != "CREATE":
        previous = (request.old or {}).get("metadata") or {}
        old_annotations, old_labels = previous.get("annotations") or {}, previous.get("labels") or {}
        return Stamp(
            annotations={key: old_annotations.get(key) for key in (ANNOTATION_CREATOR, ANNOTATION_SEAL)},
            labels={key: old_labels.get(key) for key in (LABEL_PROFILE, LABEL_RISK_LEVEL)},
            spec={},
        )
    creator = creator_from_userinfo(request.userinfo)
    metadata = body.get("metadata") or {}
    namespace, name = str(metadata.get("namespace", "")), str(metadata.get("name") or "")
    if not name:
        raise Refused([Violation("name-required", "metadata.name: required (the creator seal binds the name; no generateName)")])
    spec = dict(body.get("spec") or {})
    changes: dict[str, Any] = {}
    if not spec.get("profile") and admission.settings.default_profile:
        changes["profile"] = admission.settings.default_profile
    agent = creator_agent(creator, admission.lookup)
    if agent is not None and not spec.get("delegator") and agent.metadata.namespace == namespace:
        changes["delegator"] = {"kind": "AgentIdentity", "name": agent.metadata.name}  # an agent creating is delegating
    # Mutating admission runs before the API server assigns the uid and creation time.
    assigned = {"uid": "", "creationTimestamp": format_timestamp(now)}

    def as_stored() -> AgentIdentity:
        parsed = parse_identity({**body, "metadata": assigned | dict(metadata), "spec": spec | changes})
        if isinstance(parsed, str):
            raise Refused([Violation("schema", parsed)])
        return parsed

    identity = as_stored()
    # The TTL is resolved once, here, into what the seal covers: later, nothing (least of all a
    # status) can give the identity another, even once its profile is gone.
    ttl = ttl_text(identity.spec.ttl, profile_of(identity, admission.settings, admission.profile_lookup))
    if ttl is not None and ttl != identity.spec.ttl:
        changes["ttl"] = ttl
        identity = as_stored()
    spec |= changes
    facts = facts_for(
        identity,
        settings=admission.settings,
        lookup=admission.lookup,
        profile_lookup=admission.profile_lookup,
        creator=creator,
        creator_of=admission.sealer.creator_of,
        created_at=now,
        admission=True,
    )
    violations = judge(admission.reviews, facts)
    if violations:
        raise Refused(violations)
    annotation = creator.to_annotation()
    profile = facts.profile
    labels = {LABEL_PROFILE: profile.name, LABEL_RISK_LEVEL: profile.spec.risk_level} if profile else {}
    return Stamp(
        annotations={
            ANNOTATION_CREATOR: annotation,
            ANNOTATION_SEAL: admission.sealer.seal(namespace=namespace, name=name, spec=spec, creator=annotation),
        },
        labels=dict(labels),
        spec=changes,
    )


def review(admission: Admission, request: Request) -> None:
    """The validating webhook, after every mutation: identity-defining fields never change, and a
    new object carries a seal that holds for it exactly as it will be stored (so no later
    mutating webhook changed what was judged). Raises :class:`Refused`."""
    body = request.body
    if request.operation == "UPDATE":
        previous, identity = parse_identity(dict(request.old or {})), parse_identity(dict(body))
        if isinstance(previous, AgentIdentity) and isinstance(identity, AgentIdentity):
            unchanged = unchanged_on_update(previous.spec, identity.spec)
            if unchanged:
                raise Refused([unchanged])
        if refusal := agent_self_update_problem(request.old or {}, body, username=str(request.userinfo.get("username", ""))):
            raise Refused([refusal])
        return
    problem = admission.sealer.problem(body, created_at=request.now)
    if problem:
        raise Refused([Violation("creator-sealed", f"metadata.annotations[{ANNOTATION_SEAL}]: {problem}")])


# What an update may touch besides spec.done; the API server keeps the rest of metadata itself.
_AGENT_FROZEN_METADATA = ("labels", "annotations", "finalizers", "ownerReferences")


def agent_self_update_problem(old: Mapping[str, Any], new: Mapping[str, Any], *, username: str) -> Violation | None:
    """An agent (its own ServiceAccount aid-<name>, whose Role grants it patch on this one
    AgentIdentity) may change exactly one thing: set spec.done. Any other change it asks for,
    to the spec or to labels, annotations, finalizers or ownerReferences, is refused; anyone
    else's update is judged by the other rules."""
    metadata = new.get("metadata") or {}
    if username != f"system:serviceaccount:{metadata.get('namespace')}:aid-{metadata.get('name')}":
        return None
    before, after = old.get("metadata") or {}, metadata
    changed = [f"metadata.{key}" for key in _AGENT_FROZEN_METADATA if (before.get(key) or None) != (after.get(key) or None)]
    spec_before = {key: value for key, value in (old.get("spec") or {}).items() if key != "done"}
    spec_after = {key: value for key, value in (new.get("spec") or {}).items() if key != "done"}
    keys = sorted(set(spec_before) | set(spec_after))
    changed += [f"spec.{key}" for key in keys if spec_before.get(key) != spec_after.get(key)]
    if not changed:
        return None
    return Violation(
        "agent-self-update",
        f"{', '.join(changed)}: an agent may only set spec.done on its own AgentIdentity (kubectl agent done), nothing else",
    )


def denial_message(violations: list[Violation], *, subject: str = "AgentIdentity") -> str:
    return f"{subject} refused: " + "; ".join(str(v) for v in violations)
