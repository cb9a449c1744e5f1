"""The chart's operator as real pods: two replicas Ready under Pod Security `restricted`, their
probes answering, both behind the webhook Service, one of them leading; and an AgentIdentity in a
served namespace provisioned by them, with a token that works exactly within its scopes."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from kind.release import Release, is_ready

POD_SECURITY = "pod-security.kubernetes.io/enforce"


def test_both_replicas_are_ready_under_restricted_pod_security(release: Release, settled: list[str]) -> None:
    namespace = release.cluster.core.read_namespace(release.namespace)
    assert namespace.metadata.labels.get(POD_SECURITY) == "restricted"
    # The level is enforced: a pod that breaks it is refused (a server-side dry run writes nothing).
    privileged = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "privileged-probe"},
        "spec": {"containers": [{"name": "c", "image": "agent-identity-operator", "securityContext": {"privileged": True}}]},
    }
    with pytest.raises(ApiException) as refused:
        release.cluster.core.create_namespaced_pod(release.namespace, privileged, dry_run="All")
    assert refused.value.status == 403 and "violates PodSecurity" in refused.value.body, refused.value.body

    deployment = release.apps.read_namespaced_deployment(release.name, release.namespace)
    assert deployment.spec.replicas == len(settled) == 2
    assert deployment.spec.strategy.type == "RollingUpdate"
    rolling = deployment.spec.strategy.rolling_update
    assert (rolling.max_unavailable, rolling.max_surge) == (0, 1)

    for pod in release.pods():
        (container,) = [c for c in pod.spec.containers if c.name == "operator"]
        statuses = {s.name: s for s in pod.status.container_statuses}
        # Ready: the readiness probe (/readyz) passes. Never restarted: the liveness probe
        # (/healthz) never failed, and the replica never lost a lease it held.
        assert is_ready(pod) and statuses["operator"].ready, pod.metadata.name
        assert statuses["operator"].restart_count == 0, f"{pod.metadata.name} restarted: {statuses['operator'].last_state}"
        assert (container.readiness_probe.http_get.path, container.liveness_probe.http_get.path) == ("/readyz", "/healthz")
        assert container.startup_probe.tcp_socket.port == "webhook"  # Ready only once the webhooks listen

    # Both replicas serve the webhooks: both are ready endpoints of the webhook Service.
    slices = client.DiscoveryV1Api(release.cluster.api_client).list_namespaced_endpoint_slice(
        release.namespace, label_selector=f"kubernetes.io/service-name={release.name}-webhook"
    )
    serving = {
        endpoint.target_ref.name
        for piece in slices.items
        for endpoint in piece.endpoints or []
        if endpoint.conditions.ready and endpoint.target_ref
    }
    assert serving == set(settled)
    identity, leader = release.leader()
    assert leader in settled
    print(f"\npods {settled}, leader {leader} ({identity}), webhook endpoints {sorted(serving)}")


def test_an_identity_becomes_ready_and_its_token_works_within_its_scopes(release: Release, settled: list[str]) -> None:
    cluster, namespace = release.cluster, release.served
    manifest = release.identity("smoke")
    name = manifest["metadata"]["name"]
    started = time.monotonic()
    cluster.create_identity(manifest)
    try:
        ready = cluster.wait_phase(namespace, name, "Ready", timeout=60)
        took = time.monotonic() - started
        creator = json.loads(ready["metadata"]["annotations"]["agentidentity.dev/creator"])
        assert creator["username"] == release.creator  # stamped by the webhook, through the Service

        token = cluster.token_secret(namespace, name)["token"]
        review = cluster.token_review(token)
        assert review["authenticated"], review
        assert review["username"] == f"system:serviceaccount:{namespace}:aid-{name}"
        agent = cluster.as_token(token)
        assert cluster.call_status(lambda: agent.list_namespaced_config_map(namespace)) == 200
        assert cluster.call_status(lambda: agent.list_namespaced_secret(namespace)) == 403
        rules = (
            client.AuthorizationV1Api(cluster.token_client(token))
            .create_self_subject_rules_review({"spec": {"namespace": namespace}})
            .status.resource_rules
        )
        assert granted(rules) >= {("get", "", "configmaps"), ("list", "", "configmaps")}
        assert not {atom for atom in granted(rules) if atom[2] == "secrets"}
        release.record("smoke", {"ready_after_s": round(took, 2)})
    finally:
        cluster.delete_identity(namespace, name)


def granted(rules: list[Any]) -> set[tuple[str, str, str]]:
    return {
        (verb, group, resource)
        for rule in rules
        for verb in rule.verbs
        for group in rule.api_groups or [""]
        for resource in rule.resources or []
    }
