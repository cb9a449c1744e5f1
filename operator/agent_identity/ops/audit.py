"""Audit lines: one JSON object per lifecycle action, on the ``agent_identity.ops.audit`` logger.

The line says who (uid, namespace, name), what for (task), on whose behalf (delegation chain) and
when (the action's time and the identity's expiry). It never carries a token: the builder below
takes no argument a token could travel in, and the tests grep the output for token material.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import datetime
from enum import StrEnum
from typing import Any

from agent_identity.api.durations import format_timestamp
from agent_identity.api.v1alpha1 import AgentIdentity

LOGGER_NAME = "agent_identity.audit"
_logger = logging.getLogger(LOGGER_NAME)


class Action(StrEnum):
    PROVISIONED = "provisioned"
    TOKEN_ISSUED = "token_issued"
    EXPIRED = "expired"
    REVOKED = "revoked"
    DENIED = "denied"
    FAILED = "failed"


def audit_record(
    action: Action,
    identity: AgentIdentity,
    *,
    now: datetime,
    chain: tuple[str, ...] | list[str],
    expires_at: datetime | None,
    reason: str,
    profile: str | None = None,
    risk_level: str | None = None,
    detail: dict[str, Any] | None = None,
) -> dict[str, Any]:
    record: dict[str, Any] = {
        "audit": "agentidentity.dev/v1",
        "time": format_timestamp(now),
        "action": str(action),
        "reason": reason,
        "uid": identity.metadata.uid,
        "namespace": identity.metadata.namespace,
        "name": identity.metadata.name,
        "task": identity.spec.task,
        "delegator": identity.spec.delegator.principal(identity_namespace=identity.metadata.namespace)
        if identity.spec.delegator
        else None,
        "delegationChain": list(chain),
        "createdAt": identity.metadata.creation_timestamp,
        "expiresAt": format_timestamp(expires_at) if expires_at else None,
        "profile": profile or identity.status.profile,
        "riskLevel": risk_level or identity.status.risk_level,
    }
    if detail:
        record.update(detail)
    return record


_listeners: list[Callable[[dict[str, Any]], None]] = []


def subscribe(listener: Callable[[dict[str, Any]], None]) -> None:
    """Also hand every record to ``listener`` (the metrics count lifecycle actions this way)."""
    _listeners.append(listener)


def write(record: dict[str, Any]) -> None:
    """One line on the audit logger (stdout, or the ``--audit-file`` sink)."""
    _logger.info(json.dumps(record, sort_keys=False, separators=(",", ":")))


_append: Callable[[dict[str, Any]], None] = write


def chain_into(append: Callable[[dict[str, Any]], None] | None) -> None:
    """Every record from now on goes through ``append`` (the trail writer, which links it into the
    hash chain and writes it); None: written as it is."""
    global _append
    _append = append or write


def emit(record: dict[str, Any]) -> None:
    """The one way a record is written: through the chain when the operator runs one."""
    _append(record)
    for listener in _listeners:
        listener(record)
