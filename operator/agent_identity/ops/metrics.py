"""Prometheus metrics, names prefixed ``agentidentity_``.

State (identities by phase, namespace, profile; delegation depth) is computed at scrape time from
the controller's cache, never kept twice. Events (provisioned, expired, revoked, denied, tokens and
assertions issued or failed, reconcile errors, webhook decisions) are counters, fed from the audit
stream and a few explicit calls; create-to-Ready latency and retirement lag are histograms. The
served namespaces' Pod Security is read from what the last check saw.
"""

from __future__ import annotations

import time
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from agent_identity.api.durations import parse_timestamp

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0, 30.0)
OVERDUE_GRACE_S = 5.0
LAG_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0)


@dataclass(frozen=True, slots=True)
class LiveIdentity:
    """What the state metrics count of one identity, kept by the controller's cache beside the
    (packed) body, so a scrape never parses 100,000 bodies."""

    phase: str
    namespace: str
    profile: str
    risk_level: str
    depth: int  # agents above it in its delegation chain
    expires_at: float | None  # epoch seconds

    @classmethod
    def of(cls, body: dict[str, Any]) -> LiveIdentity:
        status = body.get("status") or {}
        expires = status.get("expiresAt")
        return cls(
            phase=status.get("phase") or "Pending",
            namespace=str(body["metadata"]["namespace"]),
            profile=status.get("profile") or (body.get("spec") or {}).get("profile") or "",
            risk_level=status.get("riskLevel") or "",
            depth=sum(1 for p in status.get("delegationChain") or [] if p.startswith("agent:")),
            expires_at=parse_timestamp(expires).timestamp() if expires else None,
        )


class _LiveIdentities(Collector):
    def __init__(self, identities: Callable[[], Iterable[LiveIdentity]]) -> None:
        self.identities = identities

    def collect(self) -> Iterator[Metric]:
        by_phase: Tally[tuple[str, str, str, str]] = Tally()
        depths: Tally[int] = Tally()
        overdue = 0
        now = time.time()
        for live in self.identities():
            by_phase[(live.phase, live.namespace, live.profile, live.risk_level)] += 1
            if live.phase == "Ready":
                depths[live.depth] += 1
                overdue += bool(live.expires_at is not None and live.expires_at + OVERDUE_GRACE_S < now)
        identities = GaugeMetricFamily(
            "agentidentity_identities",
            "AgentIdentities known to the operator",
            labels=["phase", "namespace", "profile", "risk_level"],
        )
        for (phase, namespace, profile, risk), count in sorted(by_phase.items()):
            identities.add_metric([phase, namespace, profile, risk], count)
        yield identities
        yield GaugeMetricFamily(
            "agentidentity_overdue_identities",
            f"Ready identities more than {OVERDUE_GRACE_S:.0f}s past expiresAt (should always be 0)",
            value=overdue,
        )
        depth = GaugeMetricFamily("agentidentity_delegation_depth", "Ready identities by agents above them", labels=["depth"])
        for level, count in sorted(depths.items()):
            depth.add_metric([str(level)], count)
        yield depth


class _PodSecurity(Collector):
    """The served namespaces' Pod Security, as last read: namespace -> enforced (baseline or restricted)."""

    def __init__(self, enforcement: Callable[[], Mapping[str, bool]]) -> None:
        self.enforcement = enforcement

    def collect(self) -> Iterator[Metric]:
        enforcement = self.enforcement()
        per_namespace = GaugeMetricFamily(
            "agentidentity_namespace_pod_security_enforced",
            "1 if the served namespace enforces Pod Security baseline or restricted, 0 if privileged pods may run there",
            labels=["namespace"],
        )
        for namespace, enforced in sorted(enforcement.items()):
            per_namespace.add_metric([namespace], float(enforced))
        yield per_namespace
        yield GaugeMetricFamily(
            "agentidentity_namespaces_without_pod_security",
            "Served namespaces where Pod Security enforces neither baseline nor restricted (should be 0)",
            value=sum(1 for enforced in enforcement.values() if not enforced),
        )


# The cause label of agentidentity_retirement_lag_seconds, by the audit record's reason, and the
# moment each lag is measured from: the deadline (ttl; expiresAt), the reconcile that saw the task,
# the agent or its delegator end it (task_completed, self, heartbeat, delegator: the retiring
# record's expiresAt, which is that moment), the deletion (revoked: endedAt, its deletionTimestamp,
# when the deleted object carried one). The bench measures from the client's end of each cause.
RETIREMENT_CAUSES = {
    "TTLElapsed": "ttl",
    "TaskCompleted": "task_completed",
    "SelfRetired": "self",
    "HeartbeatLost": "heartbeat",
    "Deleted": "revoked",
    "DelegatorRetired": "delegator",
    "DelegatorGone": "delegator",
}


class Metrics:
    def __init__(
        self, *, registry: CollectorRegistry | None = None, first_seen: Callable[[str, str], float | None] | None = None
    ) -> None:
        self.registry = registry or CollectorRegistry()
        self.first_seen = first_seen or (lambda namespace, name: None)
        r = self.registry
        self.provisioned = Counter("agentidentity_provisioned", "Identities provisioned", ["namespace"], registry=r)
        self.expired = Counter("agentidentity_expired", "Identities retired at their TTL", ["namespace"], registry=r)
        self.revoked = Counter("agentidentity_revoked", "Identities revoked by deletion", ["namespace"], registry=r)
        self.denied = Counter("agentidentity_denied", "Identities denied", ["namespace", "reason"], registry=r)
        self.tokens = Counter("agentidentity_tokens_issued", "Tokens minted with TokenRequest", registry=r)
        self.token_failures = Counter("agentidentity_token_failures", "Token issuance failures", registry=r)
        self.assertions = Counter("agentidentity_assertions_issued", "Delegation assertions signed", registry=r)
        self.assertion_failures = Counter("agentidentity_assertion_failures", "Assertion signing failures", registry=r)
        self.reconcile_errors = Counter("agentidentity_reconcile_errors", "Failed reconciles", ["reason"], registry=r)
        self.webhook_requests = Counter(
            "agentidentity_webhook_requests", "Admission decisions", ["webhook", "outcome"], registry=r
        )
        self.ready_latency = Histogram(
            "agentidentity_ready_latency_seconds", "First seen by the operator to Ready", buckets=LATENCY_BUCKETS, registry=r
        )
        self.retirement_lag = Histogram(
            "agentidentity_retirement_lag_seconds",
            "Credentials deleted minus the moment the operator knew them unneeded, by cause (see RETIREMENT_CAUSES)",
            ["cause"],
            buckets=LAG_BUCKETS,
            registry=r,
        )
        # Every cause's series exists from the first scrape, so rate() sees its first retirement.
        for cause in sorted(set(RETIREMENT_CAUSES.values())):
            self.retirement_lag.labels(cause)

    def watch(
        self,
        identities: Callable[[], Iterable[LiveIdentity]],
        *,
        queue_depth: Callable[[], int] = lambda: 0,
        cache_complete: Callable[[], bool] = lambda: False,
    ) -> None:
        self.registry.register(_LiveIdentities(identities))
        depth = Gauge("agentidentity_workqueue_depth", "Identities queued or being reconciled", registry=self.registry)
        depth.set_function(queue_depth)
        complete = Gauge(
            "agentidentity_cache_complete",
            "1 once every served namespace has been listed whole since this replica started, else 0",
            registry=self.registry,
        )
        complete.set_function(lambda: float(cache_complete()))

    def watch_pod_security(self, enforcement: Callable[[], Mapping[str, bool]]) -> None:
        self.registry.register(_PodSecurity(enforcement))

    def on_audit(self, record: dict[str, Any]) -> None:
        """Counts one lifecycle action from its audit record."""
        action, namespace, now = record["action"], record["namespace"], time.time()
        if action == "provisioned":
            self.provisioned.labels(namespace).inc()
            seen = self.first_seen(namespace, record["name"])
            if seen is not None:
                self.ready_latency.observe(max(0.0, now - seen))
        elif action in ("expired", "revoked"):
            (self.expired if action == "expired" else self.revoked).labels(namespace).inc()
            cause = RETIREMENT_CAUSES.get(record.get("reason", ""))
            # A deletion is measured from its deletionTimestamp only: without one, nothing is known.
            moment = record.get("endedAt") if cause == "revoked" else record.get("expiresAt")
            if cause and moment:
                self.retirement_lag.labels(cause).observe(max(0.0, now - parse_timestamp(moment).timestamp()))
        elif action == "denied":
            self.denied.labels(namespace, record.get("reason", "")).inc()
        elif action == "token_issued":
            self.tokens.inc()
            if record.get("assertion"):
                self.assertions.inc()
