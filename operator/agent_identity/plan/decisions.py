"""Desired versus actual, as data. Pure: the reconciler observes, this module decides, the
reconciler applies. Table-driven unit tests pin every branch without an API server.

Two decisions live here:

- :func:`decide` takes the identity, its delegator (if an AgentIdentity) and ``now``, and says
  what the identity should be: provisioned, waiting, denied or retired;
- :func:`diff_child` and :func:`token_verdict` compare one observed child with its desired form.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from pydantic import ValidationError

from agent_identity.api.conditions import Reason
from agent_identity.api.durations import (
    InvalidTTLError,
    format_timestamp,
    identity_expires_at,
    parse_timestamp,
    parse_ttl,
    token_needs_refresh,
)
from agent_identity.api.v1alpha1 import FINAL_PHASES, RETIRED_PHASES, AgentIdentity, AgentProfile
from agent_identity.plan.children import (
    ANNOTATION_TOKEN_EXPIRES_AT,
    ANNOTATION_TOKEN_ISSUED_AT,
    ANNOTATION_TOKEN_SHA256,
    Provenance,
    owner_reference,
    token_digest,
)

NO_DELEGATOR = "unspecified"


# -- what the identity should be --------------------------------------------------------------


@dataclass(frozen=True)
class Provision:
    provenance: Provenance
    # The delegating AgentIdentity owns its delegates, so deleting it deletes them.
    delegator_owner_reference: dict[str, Any] | None


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
    phase: str = "Expired"  # "Revoked" when its delegator went away


Decision = Provision | Wait | Deny | Retire

DELEGATOR_RETRY = timedelta(seconds=2)


@dataclass(frozen=True)
class DelegatorView:
    """What ``decide`` needs to know about an AgentIdentity delegator (``None`` if it is missing)."""

    identity: AgentIdentity | None
    # The delegate's chain through its ancestors' specs (see facts.chain_of); None: from the
    # delegator's status (unit tests).
    chain: tuple[str, ...] | None = None


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


def decide(
    identity: AgentIdentity,
    *,
    delegator: DelegatorView | None,
    now: datetime,
    profile: AgentProfile | None = None,
    ttl: timedelta | None = None,
) -> Decision:
    """What ``identity`` should be at ``now``. ``delegator`` is given only for AgentIdentity
    delegators; ``ttl`` is the effective TTL when it is not ``spec.ttl`` (a profile's default)."""
    spec = identity.spec
    if ttl is None:
        if spec.ttl is None:
            return Deny(Reason.INVALID_SPEC, "spec.ttl: required (no profile defaultTTL applies)")
        try:
            ttl = parse_ttl(spec.ttl)
        except InvalidTTLError as error:  # the CRD's CEL rule refuses this; a missing CRD update might not
            return Deny(Reason.INVALID_SPEC, f"spec.ttl: {error}")
    profile_name, risk_level = (profile.name, profile.spec.risk_level) if profile else (None, None)

    namespace = identity.metadata.namespace
    principal = spec.delegator.principal(identity_namespace=namespace) if spec.delegator else NO_DELEGATOR
    chain: tuple[str, ...] = (principal,) if spec.delegator else ()
    delegator_expires_at: datetime | None = None
    delegator_owner: dict[str, Any] | None = None
    if spec.delegator is not None and spec.delegator.kind == "AgentIdentity":
        if spec.delegator.namespace not in (None, namespace):
            return Deny(
                Reason.INVALID_DELEGATOR,
                f"spec.delegator: an AgentIdentity delegator must be in namespace {namespace!r}, "
                f"not {spec.delegator.namespace!r}",
            )
        if spec.delegator.name == identity.metadata.name:
            return Deny(Reason.INVALID_DELEGATOR, "spec.delegator: an AgentIdentity cannot delegate to itself")
        parent = delegator.identity if delegator else None
        created_at = parse_timestamp(identity.metadata.creation_timestamp)
        parent_chain = (delegator.chain if delegator else None) or ()
        if parent is not None and delegator is not None and delegator.chain is None:
            parent_chain = (*(parent.status.delegation_chain or ()), f"agent:{namespace}/{parent.metadata.name}")

        def retired(reason: Reason, message: str, phase: str = "Expired") -> Retire:
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
                phase="Revoked",
            )
        if parent is None:
            return Wait(
                Reason.DELEGATOR_NOT_READY,
                f"delegator AgentIdentity {namespace}/{spec.delegator.name} does not exist",
                DELEGATOR_RETRY,
            )
        parent_phase = parent.status.phase
        if parent_phase in RETIRED_PHASES:
            return retired(
                Reason.DELEGATOR_RETIRED,
                f"delegator {namespace}/{parent.metadata.name} is {parent_phase}; its delegates retire with it",
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
        if parent_phase != "Ready" or parent.status.expires_at is None:
            return Wait(
                Reason.DELEGATOR_NOT_READY,
                f"delegator AgentIdentity {namespace}/{parent.metadata.name} is {parent_phase or 'Pending'}, not Ready",
                DELEGATOR_RETRY,
            )
        chain = parent_chain
        delegator_expires_at = parse_timestamp(parent.status.expires_at)
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


# -- one child --------------------------------------------------------------------------------


class ChildAction(StrEnum):
    KEEP = "keep"
    CREATE = "create"
    UPDATE = "update"  # PUT over the observed resourceVersion
    RECREATE = "recreate"  # an immutable field differs (RoleBinding roleRef, Secret type)
    CONFLICT = "conflict"  # an object of that name exists and is not ours: never touch it


_IMMUTABLE_FIELDS = ("roleRef", "type")
_OWNED_FIELDS = ("automountServiceAccountToken", "rules", "roleRef", "subjects", "type")


def is_owned_by(obj: dict[str, Any], owner_uid: str) -> bool:
    return any(ref.get("uid") == owner_uid for ref in obj.get("metadata", {}).get("ownerReferences") or [])


def recorded_uid(identity: AgentIdentity, kind: str) -> str | None:
    """The uid of the ``kind`` child as the identity's status recorded it when it was provisioned."""
    recorded = identity.status.child_uids or {}
    return recorded.get(kind) or (identity.status.service_account_uid if kind == "ServiceAccount" else None)


def is_ours(obj: dict[str, Any], owner_uid: str, recorded: str | None) -> bool:
    """Owned by the identity, or the very object its status recorded (ownerReferences stripped)."""
    return is_owned_by(obj, owner_uid) or (recorded is not None and obj.get("metadata", {}).get("uid") == recorded)


def diff_child(
    desired: dict[str, Any], actual: dict[str, Any] | None, *, owner_uid: str, recorded_uid: str | None = None
) -> ChildAction:
    """What to do so that ``actual`` carries every field we own in ``desired`` (its ownerReference included)."""
    if actual is None:
        return ChildAction.CREATE
    if not is_ours(actual, owner_uid, recorded_uid):
        return ChildAction.CONFLICT
    if not is_owned_by(actual, owner_uid):
        return ChildAction.UPDATE  # ours by uid, its ownerReference stripped: put it back
    if any(field in desired and desired.get(field) != actual.get(field) for field in _IMMUTABLE_FIELDS):
        return ChildAction.RECREATE
    if any(desired.get(field) != actual.get(field) for field in _OWNED_FIELDS if field in desired):
        return ChildAction.UPDATE
    desired_meta, actual_meta = desired["metadata"], actual["metadata"]
    for key in ("labels", "annotations"):
        wanted = desired_meta.get(key, {})
        present = actual_meta.get(key) or {}
        if any(present.get(k) != v for k, v in wanted.items()):
            return ChildAction.UPDATE
    return ChildAction.KEEP


def merged_for_update(desired: dict[str, Any], actual: dict[str, Any]) -> dict[str, Any]:
    """``desired`` over ``actual``: labels and annotations others added (and the token's own
    annotations on the Secret) are kept, data is kept, the resourceVersion guards the write."""
    actual_meta = actual["metadata"]
    desired_meta = desired["metadata"]
    metadata = {
        **desired_meta,
        "resourceVersion": actual_meta["resourceVersion"],
        "labels": {**(actual_meta.get("labels") or {}), **desired_meta.get("labels", {})},
        "annotations": {**(actual_meta.get("annotations") or {}), **desired_meta.get("annotations", {})},
    }
    merged = {**actual, **desired, "metadata": metadata}
    return merged


# -- the token in its Secret ------------------------------------------------------------------


class TokenVerdict(StrEnum):
    VALID = "valid"
    MISSING = "missing"
    ALTERED = "altered"  # data no longer matches what we wrote
    REFRESH = "refresh"  # the apiserver capped the lifetime and it is 80 % used


@dataclass(frozen=True)
class TokenFacts:
    """What the Secret says about its token; readable without ever logging the token."""

    issued_at: datetime
    expires_at: datetime


def decode_secret_data(secret: dict[str, Any]) -> dict[str, str]:
    try:
        return {key: base64.b64decode(value).decode() for key, value in (secret.get("data") or {}).items()}
    except (binascii.Error, UnicodeDecodeError):
        return {}


def token_facts(secret: dict[str, Any]) -> TokenFacts | None:
    annotations = secret.get("metadata", {}).get("annotations") or {}
    try:
        return TokenFacts(
            issued_at=parse_timestamp(annotations[ANNOTATION_TOKEN_ISSUED_AT]),
            expires_at=parse_timestamp(annotations[ANNOTATION_TOKEN_EXPIRES_AT]),
        )
    except (KeyError, ValueError):
        return None


def token_verdict(
    secret: dict[str, Any], *, expected_data: dict[str, str] | None, now: datetime, identity_expires_at: datetime
) -> TokenVerdict:
    """Is the token in ``secret`` still the one we minted, intact, and good for long enough?

    ``expected_data`` is what the Secret should hold for the token it has (see
    ``builders.token_secret_data``), or ``None`` when it has no token at all.
    """
    data = decode_secret_data(secret)
    facts = token_facts(secret)
    digest = (secret.get("metadata", {}).get("annotations") or {}).get(ANNOTATION_TOKEN_SHA256)
    if not data.get("token") or facts is None or digest is None:
        return TokenVerdict.MISSING
    if digest != token_digest(data["token"]) or data != expected_data:
        return TokenVerdict.ALTERED
    if token_needs_refresh(
        now=now,
        token_issued_at=facts.issued_at,
        token_expires_at=facts.expires_at,
        identity_expires_at=identity_expires_at,
    ):
        return TokenVerdict.REFRESH
    return TokenVerdict.VALID
