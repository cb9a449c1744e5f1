"""The dead-man's switch (spec.heartbeat), as data: the Lease the agent renews, and whether it
went a period without a renewal. Pure.

The rule for outages: a period counts only while the API server was reachable, since the agent
cannot renew when nobody can write. The deadline is one period after the later of the last
renewal and the moment the operator last found the API server reachable again after failing to
reach it (``reachable_since``; the operator's start counts as such a moment). An outage of the API
server, or of the operator, therefore never retires an identity: its agent gets a whole period
after the outage to renew.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from agent_identity.api.durations import parse_ttl
from agent_identity.api.v1alpha1 import AgentIdentity
from agent_identity.plan.children import (
    COORDINATION,
    LABEL_IDENTITY,
    LABEL_MANAGED_BY,
    MANAGED_BY,
    child_name,
    identity_owner_reference,
    lease_name,
)


def format_micro(moment: datetime) -> str:
    """A Lease's MicroTime."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def heartbeat_lease(identity: AgentIdentity, *, now: datetime) -> dict[str, Any]:
    """The Lease the agent renews, renewed once by the operator at its creation (the first period
    starts when the identity is provisioned)."""
    period = int(parse_ttl(str(identity.spec.heartbeat)).total_seconds())
    return {
        "apiVersion": f"{COORDINATION}/v1",
        "kind": "Lease",
        "metadata": {
            "name": lease_name(identity),
            "namespace": identity.metadata.namespace,
            "labels": {LABEL_MANAGED_BY: MANAGED_BY, LABEL_IDENTITY: identity.metadata.name},
            "ownerReferences": [identity_owner_reference(identity)],
        },
        "spec": {"holderIdentity": child_name(identity), "leaseDurationSeconds": period, "renewTime": format_micro(now)},
    }


# How far ahead of the operator's clock a renewal may claim to be (clock skew): a renewTime set
# further ahead would stretch a period, and is refused.
CLOCK_MARGIN = timedelta(seconds=5)


@dataclass(frozen=True)
class Heartbeat:
    lost: str | None  # why the identity is retired (None: alive)
    deadline: datetime | None  # when to look again


def heartbeat_state(
    identity: AgentIdentity, lease: Mapping[str, Any] | None, *, now: datetime, reachable_since: datetime
) -> Heartbeat:
    """Whether ``identity``'s agent missed its heartbeat (``lease``: its Lease as read now, None if
    it does not exist; only called once the Lease was created)."""
    period = parse_ttl(str(identity.spec.heartbeat))
    if lease is None:
        return Heartbeat(f"spec.heartbeat: the Lease {lease_name(identity)} was deleted", None)
    renewed = (lease.get("spec") or {}).get("renewTime")
    renewed_at = _parse_micro(str(renewed)) if renewed else None
    if renewed_at is not None and renewed_at > now + CLOCK_MARGIN:
        return Heartbeat(f"spec.heartbeat: {lease_name(identity)} claims a renewal in the future ({renewed})", None)
    start = max(renewed_at, reachable_since) if renewed_at else reachable_since
    deadline = start + period
    if now >= deadline:
        last = f"last renewed {renewed}" if renewed else "never renewed"
        return Heartbeat(f"spec.heartbeat: no renewal of {lease_name(identity)} for {identity.spec.heartbeat} ({last})", None)
    return Heartbeat(None, deadline)


def _parse_micro(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))
