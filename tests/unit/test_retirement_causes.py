"""agentidentity_retirement_lag_seconds by cause (#33 part 4): each retirement reason is counted
under its cause, from the moment that cause gives."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from agent_identity.api.durations import format_timestamp
from agent_identity.ops.metrics import Metrics


def ago(seconds: float) -> str:
    return format_timestamp(datetime.now(UTC) - timedelta(seconds=seconds))


@pytest.mark.parametrize(
    ("action", "reason", "cause"),
    [
        ("expired", "TTLElapsed", "ttl"),
        ("expired", "TaskCompleted", "task_completed"),
        ("expired", "SelfRetired", "self"),
        ("expired", "DelegatorRetired", "delegator"),
        ("revoked", "DelegatorGone", "delegator"),
    ],
)
def test_each_reason_is_counted_under_its_cause(action: str, reason: str, cause: str) -> None:
    metrics = Metrics(first_seen=lambda namespace, name: None)
    metrics.on_audit({"action": action, "namespace": "n", "name": "a", "reason": reason, "expiresAt": ago(3)})
    count = metrics.registry.get_sample_value("agentidentity_retirement_lag_seconds_count", {"cause": cause})
    total = metrics.registry.get_sample_value("agentidentity_retirement_lag_seconds_sum", {"cause": cause})
    assert count == 1 and total is not None and 2 <= total <= 5


def test_a_deletion_is_measured_from_its_deletion_timestamp_only() -> None:
    metrics = Metrics(first_seen=lambda namespace, name: None)
    record = {"action": "revoked", "namespace": "n", "name": "a", "reason": "Deleted", "expiresAt": ago(-600)}
    metrics.on_audit(record)  # no endedAt: its deadline is not the moment it stopped being needed
    assert metrics.registry.get_sample_value("agentidentity_retirement_lag_seconds_count", {"cause": "revoked"}) == 0
    metrics.on_audit(record | {"endedAt": ago(1)})
    assert metrics.registry.get_sample_value("agentidentity_retirement_lag_seconds_count", {"cause": "revoked"}) == 1
