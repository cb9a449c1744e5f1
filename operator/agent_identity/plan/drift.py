"""How each child differs from its desired form, as values: the reconciler observes, this module
plans, a thin loop applies. Pure; table-driven unit tests pin every branch.

- :func:`plan_children` compares the desired children with what was observed and returns a
  :class:`ChildrenPlan`: per child, keep, create, update, recreate, or conflict (someone else's
  object holds the name: never touch it);
- :func:`token_verdict` says whether the token in a Secret is still the one we minted, intact and
  good for long enough.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from agent_identity.api.durations import parse_timestamp, token_needs_refresh
from agent_identity.api.v1alpha1 import AgentIdentity
from agent_identity.plan.children import (
    ANNOTATION_TOKEN_EXPIRES_AT,
    ANNOTATION_TOKEN_ISSUED_AT,
    ANNOTATION_TOKEN_SHA256,
    HINT_LABELS,
    ChildKind,
    token_digest,
)

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
        if any(present.get(k) != v for k, v in wanted.items() if k not in HINT_LABELS):
            return ChildAction.UPDATE
    return ChildAction.KEEP


@dataclass(frozen=True)
class ChildStep:
    kind: ChildKind
    action: ChildAction
    desired: dict[str, Any]
    actual: dict[str, Any] | None  # as observed (None: absent, or not looked at)


@dataclass(frozen=True)
class ChildrenPlan:
    """What to do to every child, in the order they are made."""

    steps: tuple[ChildStep, ...]

    @property
    def conflicts(self) -> tuple[ChildStep, ...]:
        return tuple(step for step in self.steps if step.action is ChildAction.CONFLICT)

    @property
    def repairs(self) -> tuple[ChildStep, ...]:
        """Existing children that drifted (updated or recreated), as opposed to missing ones."""
        return tuple(step for step in self.steps if step.action in (ChildAction.UPDATE, ChildAction.RECREATE))


def plan_child(identity: AgentIdentity, kind: ChildKind, desired: dict[str, Any], actual: dict[str, Any] | None) -> ChildStep:
    action = diff_child(desired, actual, owner_uid=identity.metadata.uid, recorded_uid=recorded_uid(identity, kind))
    return ChildStep(kind, action, desired, actual)


def plan_children(
    identity: AgentIdentity,
    desired: Mapping[ChildKind, dict[str, Any]],
    observed: Mapping[ChildKind, dict[str, Any] | None],
) -> ChildrenPlan:
    """``desired`` against ``observed`` (a kind missing from ``observed`` is taken as absent: a
    never-provisioned identity creates without looking first, and a 409 re-plans that child)."""
    return ChildrenPlan(tuple(plan_child(identity, kind, body, observed.get(kind)) for kind, body in desired.items()))


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
