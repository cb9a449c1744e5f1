"""Conditions the Kubernetes way, and the reasons shared by conditions, Events and audit lines.

One helper sets a condition: ``lastTransitionTime`` moves only when the status changes, and
``observedGeneration`` is always the generation that was reconciled. Pure.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from agent_identity.api.durations import format_timestamp

READY = "Ready"
EXPIRED = "Expired"


class Reason(StrEnum):
    """CamelCase reasons, one vocabulary for conditions, Events and audit lines."""

    PROVISIONING = "Provisioning"
    PROVISIONED = "Provisioned"
    TOKEN_ISSUED = "TokenIssued"
    RESTORED = "Restored"
    DELEGATOR_NOT_READY = "DelegatorNotReady"
    DELEGATOR_RETIRED = "DelegatorRetired"
    DELEGATOR_GONE = "DelegatorGone"
    INVALID_SPEC = "InvalidSpec"
    INVALID_DELEGATOR = "InvalidDelegator"
    POLICY_VIOLATION = "PolicyViolation"
    NAME_CONFLICT = "NameConflict"
    API_ERROR = "APIError"
    TTL_ELAPSED = "TTLElapsed"
    TASK_COMPLETED = "TaskCompleted"  # the workload of spec.boundTo ended
    HEARTBEAT_LOST = "HeartbeatLost"  # the agent's Lease went a spec.heartbeat period without a renewal
    SELF_RETIRED = "SelfRetired"  # the agent set spec.done with its own token (or anyone allowed to patch it did)
    DELETED = "Deleted"
    NOT_EXPIRED = "NotExpired"


def set_condition(
    conditions: list[dict[str, Any]] | None,
    *,
    type_: str,
    status: bool,
    reason: Reason,
    message: str,
    generation: int,
    now: datetime,
) -> list[dict[str, Any]]:
    """A new list with ``type_`` set; other conditions are kept as they are."""
    status_text = "True" if status else "False"
    previous = next((c for c in conditions or [] if c.get("type") == type_), None)
    transition = (
        previous["lastTransitionTime"]
        if previous and previous.get("status") == status_text and previous.get("lastTransitionTime")
        else format_timestamp(now)
    )
    updated = {
        "type": type_,
        "status": status_text,
        "reason": str(reason),
        "message": message,
        "lastTransitionTime": transition,
        "observedGeneration": generation,
    }
    others = [c for c in conditions or [] if c.get("type") != type_]
    return sorted([*others, updated], key=lambda c: str(c.get("type")))
