"""What a reconcile leaves behind besides children: the identity's status, its Events and its
audit lines. One writer for all three, so every step reports the same way; a status write is
skipped when nothing would change, and a failed Event is a warning, never a failed reconcile.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from agent_identity.api.conditions import EXPIRED, READY, Reason, set_condition
from agent_identity.api.durations import format_timestamp
from agent_identity.api.v1alpha1 import AgentIdentity, Phase
from agent_identity.kube.client import Kube, KubeError
from agent_identity.ops.audit import Action, audit_record, emit
from agent_identity.plan.children import Provenance

log = logging.getLogger(__name__)

_ACTIONS = {Phase.EXPIRED: Action.EXPIRED, Phase.REVOKED: Action.REVOKED, Phase.DENIED: Action.DENIED}


@dataclass(frozen=True)
class Result:
    """When to look at this identity again (``None``: only when something changes)."""

    requeue_at: datetime | None = None
    # Look again in the urgent lane, behind every deadline already due (a retirement's clean-up,
    # after its ServiceAccount: every credential of a burst dies first). Not in the routine lane,
    # where a burst's clean-ups would keep new identities waiting behind them (at a restart after
    # downtime, 1.8 s); new work keeps its one-in-four share of the workers.
    follow_up: bool = False


class Recorder:
    def __init__(self, kube: Kube) -> None:
        self.kube = kube

    def write_status(self, body: dict[str, Any], status: dict[str, Any]) -> None:
        current = body.get("status") or {}
        if all(current.get(key) == value for key, value in status.items()):
            return
        metadata = body["metadata"]
        self.kube.patch_identity_status(metadata["namespace"], metadata["name"], status)

    def transition(
        self,
        identity: AgentIdentity,
        phase: Phase,
        reason: Reason,
        message: str,
        *,
        now: datetime,
        chain: tuple[str, ...],
        expires_at: datetime | None,
    ) -> None:
        """Writes a terminal or failed phase; the Event and audit line only on the transition."""
        body = identity.body
        extra: dict[str, Any] = {}
        if expires_at is not None:
            extra["expiresAt"] = format_timestamp(expires_at)
        if chain:
            extra["delegationChain"] = list(chain)
        self.write_status(body, phase_status(body, phase, reason, message, now=now, extra=extra))
        if identity.status.phase == phase:
            return
        provenance = Provenance(delegator="", task=identity.spec.task, chain=chain, expires_at=expires_at or now)
        action = _ACTIONS.get(phase, Action.FAILED)
        self.record(identity, action, reason, provenance, now=now, message=message, warning=phase != Phase.EXPIRED)

    def record(
        self,
        identity: AgentIdentity,
        action: Action,
        reason: Reason,
        provenance: Provenance,
        *,
        now: datetime,
        message: str,
        warning: bool = False,
        event: bool = True,
    ) -> None:
        """An audit line and (unless ``event`` is false) an Event for one lifecycle step."""
        emit(
            audit_record(
                action,
                identity,
                now=now,
                chain=provenance.chain,
                expires_at=provenance.expires_at,
                reason=reason,
                profile=provenance.profile,
                risk_level=provenance.risk_level,
            )
        )
        if event:
            self.event(identity, "Warning" if warning else "Normal", reason, message, now=now)

    def event(self, identity: AgentIdentity, event_type: str, reason: Reason, message: str, *, now: datetime) -> None:
        try:
            self.kube.record_event(involved=identity.body, event_type=event_type, reason=str(reason), message=message, now=now)
        except KubeError as error:  # an Event is worth a warning, never a failed reconcile
            log.warning(
                "could not record event %s for %s/%s: %s", reason, identity.metadata.namespace, identity.metadata.name, error
            )


def phase_status(
    body: dict[str, Any],
    phase: str,
    reason: Reason,
    message: str,
    *,
    now: datetime,
    ready: bool = False,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The status for ``phase``: Ready and Expired conditions, observedGeneration, and ``extra``."""
    generation = int(body.get("metadata", {}).get("generation", 1))
    conditions = (body.get("status") or {}).get("conditions")
    conditions = set_condition(
        conditions, type_=READY, status=ready, reason=reason, message=message, generation=generation, now=now
    )
    expired = phase == Phase.EXPIRED
    conditions = set_condition(
        conditions,
        type_=EXPIRED,
        status=expired,
        reason=reason if expired else Reason.NOT_EXPIRED,
        message=message if expired else "within its TTL",
        generation=generation,
        now=now,
    )
    return {"phase": str(phase), "observedGeneration": generation, "conditions": conditions, **(extra or {})}
