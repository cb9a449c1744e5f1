"""Desired versus actual, as data. Pure: the reconciler observes, this module decides, the
reconciler applies. Table-driven unit tests pin every branch without an API server.

:func:`decide` takes the identity, its delegator (if an AgentIdentity), its profile and ``now``,
and says what the identity should be: provisioned, waiting, denied or retired. How each child
differs from its desired form is :mod:`agent_identity.plan.drift`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError

from agent_identity.api.conditions import Reason
from agent_identity.api.durations import (
    InvalidTTLError,
    format_timestamp,
    identity_expires_at,
    parse_timestamp,
    parse_ttl,
)
from agent_identity.api.v1alpha1 import FINAL_PHASES, RETIRED_PHASES, AgentIdentity, AgentProfile, Phase
from agent_identity.plan.children import (
    Provenance,
    owner_reference,
)

NO_DELEGATOR = "unspecified"
TTL_REQUIRED = "spec.ttl: required (no profile defaultTTL applies)"


def no_ttl_to_give(namespace: str, name: str) -> str:
    """Why an AgentIdentity whose own lifetime is unknown cannot delegate."""
    return (
        f"spec.delegator: AgentIdentity {namespace}/{name} has no TTL to give (no spec.ttl, no profile defaultTTL), "
        "so it cannot delegate"
    )


# -- what the identity should be --------------------------------------------------------------


@dataclass(frozen=True)
class Provision:
    provenance: Provenance
    # The delegating AgentIdentity owns its delegates, so deleting it deletes them.
    delegator_owner_reference: dict[str, Any] | None
    # The operator's binding of the creator seal to this object's uid, for the Ready status.
    seal_binding: str | None = None


@dataclass(frozen=True)
class Wait:
    reason: Reason
    message: str
    retry_after: timedelta


@dataclass(frozen=True)
class Deny:
    reason: Reason
    message: str


@dataclass(frozen=True)
class Retire:
    reason: Reason
    message: str
    provenance: Provenance
    phase: Phase = Phase.EXPIRED  # Revoked when its delegator went away


Decision = Provision | Wait | Deny | Retire

DELEGATOR_RETRY = timedelta(seconds=2)


@dataclass(frozen=True)
class DelegatorView:
    """What ``decide`` needs to know about an AgentIdentity delegator (``None`` if it is missing)."""

    identity: AgentIdentity | None
    # The delegate's chain, walked through its ancestors' specs (see policy.facts.chain_of), never
    # read from a status someone could rewrite.
    chain: tuple[str, ...] = ()
    # The delegator and the AgentIdentities above it, nearest first (empty: the delegator alone),
    # and their profiles in the same order: its deadline is worked out from them.
    lineage: tuple[AgentIdentity, ...] = ()
    profiles: tuple[AgentProfile | None, ...] = ()

    @property
    def expires_at(self) -> datetime | None:
        """The delegator's deadline from the specs and creation times of its lineage (see
        :func:`lineage_expires_at`); None when it has none to give."""
        if self.identity is None:
            return None
        return lineage_expires_at(self.lineage or (self.identity,), self.profiles)


def provisioned(identity: AgentIdentity) -> bool:
    """Credentials were issued to this identity at some point (they may need revoking)."""
    return identity.status.phase == "Ready" or bool(identity.status.service_account_uid)


def delegator_owner_uid(identity: AgentIdentity, delegator_name: str) -> str | None:
    """The uid of the delegating AgentIdentity this identity was provisioned under (its ownerReference)."""
    references = (identity.body.get("metadata") or {}).get("ownerReferences") or []
    return next(
        (str(ref.get("uid")) for ref in references if ref.get("kind") == identity.kind and ref.get("name") == delegator_name),
        None,
    )


def ttl_text(ttl: str | None, profile: AgentProfile | None) -> str | None:
    """The TTL an identity asks for: its ``spec.ttl``, else its profile's ``defaultTTL``; None when
    neither is set. The one statement of the default: the mutating webhook writes it into
    ``spec.ttl`` at admission, so the sealed spec carries it, and :func:`effective_ttl` reads it."""
    return ttl or (profile.spec.default_ttl if profile else None)


def effective_ttl(identity: AgentIdentity, profile: AgentProfile | None) -> timedelta | None:
    """The TTL an identity lives by: :func:`ttl_text` of its spec and profile, parsed. None when
    none applies (or it does not parse): the identity is then refused, never given a TTL from its
    status, which anyone allowed to patch ``agentidentities/status`` could rewrite. The one place
    a TTL is resolved: the policy checks and :func:`decide` both ask it."""
    text = ttl_text(identity.spec.ttl, profile)
    if text is None:
        return None
    try:
        return parse_ttl(text)
    except InvalidTTLError:
        return None


def lineage_expires_at(lineage: Sequence[AgentIdentity], profiles: Sequence[AgentProfile | None] = ()) -> datetime | None:
    """The deadline of ``lineage[0]``, given it and the AgentIdentities above it (nearest first)
    with their profiles in the same order (missing ones: None): the earliest creationTimestamp +
    TTL along it, since each identity is capped by the one above. Worked out from specs and
    creation times only, never from a status. None when the lineage is empty or one of them has
    no TTL to give."""
    deadlines: list[datetime] = []
    for index, identity in enumerate(lineage):
        ttl = effective_ttl(identity, profiles[index] if index < len(profiles) else None)
        if ttl is None:
            return None
        deadlines.append(parse_timestamp(identity.metadata.creation_timestamp) + ttl)
    return min(deadlines, default=None)


def decide(
    identity: AgentIdentity,
    *,
    delegator: DelegatorView | None,
    now: datetime,
    profile: AgentProfile | None = None,
    task_ended: str | None = None,
    heartbeat_lost: str | None = None,
) -> Decision:
    """What ``identity`` should be at ``now``. ``delegator`` is given only for AgentIdentity
    delegators; ``task_ended`` says why the workload it is bound to has ended (see
    :func:`agent_identity.plan.workload.task_end`), if it has; ``heartbeat_lost`` why its agent's
    heartbeat stopped (see :func:`agent_identity.plan.heartbeat.heartbeat_state`)."""
    spec = identity.spec
    ttl = effective_ttl(identity, profile)
    if ttl is None:
        return Deny(Reason.INVALID_SPEC, TTL_REQUIRED)
    profile_name, risk_level = (profile.name, profile.spec.risk_level) if profile else (None, None)

    namespace = identity.metadata.namespace
    principal = spec.delegator.principal(identity_namespace=namespace) if spec.delegator else NO_DELEGATOR
    chain: tuple[str, ...] = (principal,) if spec.delegator else ()
    ended = (
        (Reason.SELF_RETIRED, "spec.done: the task is done; the identity retired itself")
        if spec.done
        else (Reason.TASK_COMPLETED, task_ended)
        if task_ended
        else (Reason.HEARTBEAT_LOST, heartbeat_lost)
        if heartbeat_lost
        else None
    )
    if ended is not None:
        # The task is over: nothing a delegator or a clock says can keep the identity alive.
        created_at = parse_timestamp(identity.metadata.creation_timestamp)
        provenance = Provenance(
            delegator=principal,
            task=spec.task,
            chain=tuple(identity.status.delegation_chain or ()) or chain,
            expires_at=min(created_at + ttl, now),
            profile=profile_name,
            risk_level=risk_level,
        )
        return Retire(ended[0], ended[1], provenance)
    delegator_expires_at: datetime | None = None
    delegator_owner: dict[str, Any] | None = None
    if spec.delegator is not None and spec.delegator.kind == "AgentIdentity":
        if problem := spec.delegator.namespace_problem(namespace):
            return Deny(Reason.INVALID_DELEGATOR, problem)
        if spec.delegator.name == identity.metadata.name:
            return Deny(Reason.INVALID_DELEGATOR, "spec.delegator: an AgentIdentity cannot delegate to itself")
        parent = delegator.identity if delegator else None
        created_at = parse_timestamp(identity.metadata.creation_timestamp)
        parent_chain = delegator.chain if delegator else ()

        def retired(reason: Reason, message: str, phase: Phase = Phase.EXPIRED) -> Retire:
            provenance = Provenance(
                delegator=principal,
                task=spec.task,
                chain=parent_chain or tuple(identity.status.delegation_chain or ()),
                expires_at=min(created_at + ttl, now),
                profile=profile_name,
                risk_level=risk_level,
            )
            return Retire(reason, message, provenance, phase=phase)

        owner_uid = delegator_owner_uid(identity, spec.delegator.name)
        replaced = parent is not None and owner_uid is not None and owner_uid != parent.metadata.uid
        if provisioned(identity) and (parent is None or parent.metadata.deletion_timestamp or replaced):
            # Revoked by the operator at once, not whenever the garbage collector gets to it, and
            # whether or not someone stripped the ownerReference that would let it.
            return retired(
                Reason.DELEGATOR_GONE,
                f"delegator AgentIdentity {namespace}/{spec.delegator.name} was deleted; its delegates are revoked with it",
                phase=Phase.REVOKED,
            )
        if parent is None:
            return Wait(
                Reason.DELEGATOR_NOT_READY,
                f"delegator AgentIdentity {namespace}/{spec.delegator.name} does not exist",
                DELEGATOR_RETRY,
            )
        # The delegator's phase is believed only when it stops a delegate: a status someone
        # rewrote may hold a delegate back, never start one early or lengthen its life. The
        # delegator's deadline comes from the specs and creation times above.
        parent_phase = parent.status.phase
        if parent_phase in RETIRED_PHASES:
            return retired(
                Reason.DELEGATOR_RETIRED,
                f"delegator {namespace}/{parent.metadata.name} is {parent_phase}; its delegates retire with it",
            )
        delegator_expires_at = delegator.expires_at if delegator else None
        if delegator_expires_at is None:
            return Deny(Reason.INVALID_DELEGATOR, no_ttl_to_give(namespace, parent.metadata.name))
        if now >= delegator_expires_at:
            return retired(
                Reason.DELEGATOR_RETIRED,
                f"delegator {namespace}/{parent.metadata.name} expired at {format_timestamp(delegator_expires_at)}; "
                "its delegates retire with it",
            )
        if parent.metadata.deletion_timestamp:
            return Deny(
                Reason.INVALID_DELEGATOR, f"spec.delegator: AgentIdentity {namespace}/{parent.metadata.name} is being deleted"
            )
        if parent_phase in FINAL_PHASES or parent_phase == "Failed":
            return Deny(
                Reason.INVALID_DELEGATOR,
                f"spec.delegator: AgentIdentity {namespace}/{parent.metadata.name} is {parent_phase} and cannot delegate",
            )
        if parent_phase != "Ready":
            return Wait(
                Reason.DELEGATOR_NOT_READY,
                f"delegator AgentIdentity {namespace}/{parent.metadata.name} is {parent_phase or 'Pending'}, not Ready",
                DELEGATOR_RETRY,
            )
        chain = parent_chain
        delegator_owner = owner_reference(
            api_version=identity.api_version,
            kind=identity.kind,
            name=parent.metadata.name,
            uid=parent.metadata.uid,
            controller=False,
        )

    expires_at = identity_expires_at(
        created_at=parse_timestamp(identity.metadata.creation_timestamp),
        ttl=ttl,
        delegator_expires_at=delegator_expires_at,
    )
    provenance = Provenance(
        delegator=principal,
        task=spec.task,
        chain=chain,
        expires_at=expires_at,
        profile=profile_name,
        risk_level=risk_level,
    )
    if now >= expires_at:
        return Retire(Reason.TTL_ELAPSED, f"ttl {spec.ttl} elapsed at {format_timestamp(expires_at)}", provenance)
    return Provision(provenance=provenance, delegator_owner_reference=delegator_owner)


def parse_identity(body: dict[str, Any]) -> AgentIdentity | str:
    """The identity, or a one-line reason naming the field when the object does not parse."""
    try:
        return AgentIdentity.from_body(body)
    except ValidationError as error:
        first = error.errors()[0]
        location = ".".join(str(part) for part in first["loc"])
        return f"{location}: {first['msg']}"
