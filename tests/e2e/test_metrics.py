"""The operator's Prometheus metrics after a scripted scenario, each value checked against what
actually happened on the real API server."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import pytest
from kubernetes.client.rest import ApiException

from support.cluster import Cluster, make_identity, wait_for
from support.metrics import scrape, value
from support.webhooks import free_port, operator_with_webhooks, unregister


def test_metrics_match_a_scripted_scenario(cluster: Cluster, namespace: str, tmp_path: Path) -> None:
    port = free_port()
    args = ["--http-port", str(port), "--http-listen", "127.0.0.1", "--signing-namespace", namespace]
    with operator_with_webhooks(cluster, namespace, tmp_path, extra_args=args):
        wait_for("metrics served", lambda: _try_scrape(port))
        cluster.create_identity(make_identity("lead", namespace, ttl="10m"))
        cluster.wait_phase(namespace, "lead", "Ready")
        cluster.create_identity(make_identity("helper", namespace, ttl="5m", delegator={"kind": "AgentIdentity", "name": "lead"}))
        cluster.create_identity(make_identity("brief", namespace, ttl="10s"))
        cluster.create_identity(make_identity("gone", namespace, ttl="10m"))
        for name in ("helper", "brief", "gone"):
            cluster.wait_phase(namespace, name, "Ready")
        cluster.delete_identity(namespace, "gone")
        with pytest.raises(ApiException):  # refused by the webhook: no TTL anywhere
            cluster.create_identity(make_identity("ageless", namespace, ttl=None))
        unregister(cluster)  # as if the webhook were missing: the reconciler denies instead
        cluster.create_identity(make_identity("ageless", namespace, ttl=None))
        cluster.wait_phase(namespace, "ageless", "Denied")
        cluster.wait_phase(namespace, "brief", "Expired", timeout=20)
        wait_for("the revocation counted", lambda: value(scrape(port), "agentidentity_revoked_total") == 1)

        samples = scrape(port)
        assert urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5).status == 200
        assert urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5).status == 200
        assert value(samples, "agentidentity_overdue_identities") == 0
        assert value(samples, "agentidentity_cache_complete") == 1
        assert value(samples, "agentidentity_provisioned_total", namespace=namespace) == 4
        assert value(samples, "agentidentity_expired_total", namespace=namespace) == 1
        assert value(samples, "agentidentity_revoked_total", namespace=namespace) == 1
        assert value(samples, "agentidentity_denied_total", namespace=namespace, reason="InvalidSpec") == 1
        assert value(samples, "agentidentity_tokens_issued_total") == 4
        assert value(samples, "agentidentity_assertions_issued_total") == 4
        assert value(samples, "agentidentity_token_failures_total") == 0
        assert value(samples, "agentidentity_identities", phase="Ready", namespace=namespace) == 2
        assert value(samples, "agentidentity_identities", phase="Expired", namespace=namespace) == 1
        assert value(samples, "agentidentity_identities", phase="Denied", namespace=namespace) == 1
        assert value(samples, "agentidentity_delegation_depth", depth="1") == 1  # helper, under lead
        assert value(samples, "agentidentity_ready_latency_seconds_count") == 4
        assert value(samples, "agentidentity_ready_latency_seconds_bucket", le="5.0") == 4
        assert value(samples, "agentidentity_retirement_lag_seconds_count", cause="ttl") == 1
        assert value(samples, "agentidentity_retirement_lag_seconds_bucket", cause="ttl", le="2.0") == 1
        assert value(samples, "agentidentity_webhook_requests_total", webhook="validate", outcome="allowed") >= 5
        assert value(samples, "agentidentity_webhook_requests_total", webhook="mutate", outcome="denied") == 1
        assert value(samples, "agentidentity_webhook_requests_total", webhook="mutate", outcome="mutated") >= 5
        assert value(samples, "agentidentity_reconcile_errors_total") == 0


def _try_scrape(port: int) -> bool:
    try:
        scrape(port)
        return True
    except OSError:
        return False
