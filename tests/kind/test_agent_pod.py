"""An agent pod on kind, as users run one: the chart's operator, a Projected identity, a pod of the
small agent image (scripts/kind/agent-image.sh) that reads its kubelet-projected token and calls the
API server every second. In scope is allowed, out of scope 403; after the TTL the token is refused
(401) and the pod is gone within seconds of ``expiresAt``; a pod naming an identity its author may
not use, one that is not Ready, or one in a namespace the operator does not serve, is refused.

The kubelet rotates a projected token at 80 % of its 600 s life (the API server's floor), longer
than CI should wait for: what CI shows is that the token works for the identity's whole life and
dies with it. ``KIND_ROTATION=1`` adds the 9-minute test that the rotated token keeps working.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from kind.release import Release
from support.cluster import GROUP, PLURAL, VERSION, impersonated, make_identity, wait_for

LABEL = "agentidentity.dev/identity"
TTL_S = 45


def agent_pod(name: str, identity: str, image: str, *, interval_s: float = 1) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": {LABEL: identity}},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 1,
            "securityContext": {"runAsNonRoot": True, "runAsUser": 65532, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [
                {
                    "name": "agent",
                    "image": image,
                    "imagePullPolicy": "Never",
                    "env": [{"name": "AGENT_INTERVAL_S", "value": str(interval_s)}],
                    "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
                }
            ],
        },
    }


def log_lines(release: Release, namespace: str, pod: str) -> list[dict[str, Any]]:
    """The agent's calls so far (none while its container is still being created)."""
    try:
        text = release.cluster.core.read_namespaced_pod_log(pod, namespace)
    except ApiException as error:
        if error.status == 400:  # ContainerCreating: no log yet
            return []
        raise
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


@pytest.fixture(scope="module")
def image() -> str:
    name = os.environ.get("AGENT_IDENTITY_KIND_AGENT_IMAGE")
    assert name, "AGENT_IDENTITY_KIND_AGENT_IMAGE names the agent image loaded into the cluster (scripts/kind-e2e.sh sets it)"
    return name


@pytest.fixture(scope="module")
def mallory(release: Release) -> Iterator[str]:
    """A user who may create pods (and nothing about agents) in the served namespace."""
    name = release.cluster.grant(
        release.served,
        "mallory",
        [{"apiGroups": [""], "resources": ["pods"], "verbs": ["create"]}],
        name=f"mallory-{uuid.uuid4().hex[:5]}",
    )
    rbac = release.cluster.rbac
    yield "mallory"
    rbac.delete_namespaced_role_binding(name, release.served)
    rbac.delete_namespaced_role(name, release.served)


def test_an_agent_pod_works_in_scope_for_its_identitys_life_and_not_a_second_longer(
    release: Release, settled: list[str], image: str
) -> None:
    manifest = release.identity("pod-agent", ttl=f"{TTL_S}s", token={"delivery": "Projected"})
    name, namespace = manifest["metadata"]["name"], release.served
    release.cluster.create_identity(manifest)
    status = release.cluster.wait_phase(namespace, name, "Ready")["status"]
    assert "tokenSecretName" not in status  # nothing at rest
    expires_at = datetime.fromisoformat(status["expiresAt"].replace("Z", "+00:00"))
    pod = release.cluster.core.create_namespaced_pod(namespace, agent_pod(f"{name}-pod", name, image))
    assert pod.spec.service_account_name == f"aid-{name}" and pod.spec.automount_service_account_token is False

    # What the kubelet does for the pod's volume, done here too so the token's death can be shown
    # after the pod is gone: a token for the agent's account, bound to this pod.
    request = {
        "spec": {
            "expirationSeconds": 600,
            "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": pod.metadata.name, "uid": pod.metadata.uid},
        }
    }
    token = release.cluster.core.create_namespaced_service_account_token(f"aid-{name}", namespace, request).status.token

    def calls() -> list[dict[str, Any]] | None:
        lines = log_lines(release, namespace, pod.metadata.name)
        return lines if len(lines) >= 3 else None

    first = wait_for("the agent's first calls", calls, timeout=90, interval=1)
    assert {(line["in_scope"], line["out_of_scope"]) for line in first} == {(200, 403)}, first

    def gone() -> float | None:
        try:
            release.cluster.core.read_namespaced_pod(pod.metadata.name, namespace)
        except ApiException as error:
            if error.status == 404:
                return time.time()
            raise
        return None

    seconds_left = (expires_at - datetime.now(UTC)).total_seconds()
    deleted_at = wait_for("the agent pod to go at expiry", gone, timeout=seconds_left + 60, interval=0.2)
    after_expiry = deleted_at - expires_at.timestamp()
    assert release.cluster.call_status(lambda: release.cluster.as_token(token).list_namespaced_config_map(namespace)) == 401
    print(f"\nagent pod gone {after_expiry:.1f} s after expiresAt (second precision); its token refused (401) after")
    release.record("agent_pod", {"gone_after_expires_at_s": round(after_expiry, 1), "token_after_expiry": 401})
    assert after_expiry < 10, f"the pod outlived its identity by {after_expiry:.1f} s"
    assert release.cluster.get_identity(namespace, name)["status"]["phase"] == "Expired"


def test_a_pod_naming_an_identity_it_may_not_use_or_not_ready_is_refused(
    release: Release, settled: list[str], image: str, mallory: str
) -> None:
    manifest = release.identity("guarded")
    name = manifest["metadata"]["name"]
    release.cluster.create_identity(manifest)
    release.cluster.wait_phase(release.served, name, "Ready")
    with pytest.raises(ApiException) as refused:
        client.CoreV1Api(impersonated(release.cluster, mallory)).create_namespaced_pod(
            release.served, agent_pod(f"{name}-stolen", name, image)
        )
    message = json.loads(refused.value.body)["message"]
    assert refused.value.status == 403 and "pod-runs-as-agent: mallory may not start pods as AgentIdentity" in message, message

    # Not Ready: its ServiceAccount's name is taken by someone else's account, so it is Failed.
    clash = release.identity("clash")
    release.cluster.core.create_namespaced_service_account(
        release.served, {"metadata": {"name": f"aid-{clash['metadata']['name']}"}}
    )
    release.cluster.create_identity(clash)
    release.cluster.wait_phase(release.served, clash["metadata"]["name"], "Failed")
    with pytest.raises(ApiException) as refused:
        release.cluster.core.create_namespaced_pod(release.served, agent_pod("clash-pod", clash["metadata"]["name"], image))
    message = json.loads(refused.value.body)["message"]
    assert "identity-ready:" in message and "is Failed, not Ready" in message, message

    idle = release.cluster.create_test_namespace("kind-idle")  # admitted by the webhooks, served by no operator
    try:
        waiting = make_identity("waiting", idle, profile="read-only", delegator={"kind": "User", "name": release.creator})
        release.cluster.custom.create_namespaced_custom_object(GROUP, VERSION, idle, PLURAL, waiting)
        with pytest.raises(ApiException) as refused:
            release.cluster.core.create_namespaced_pod(idle, agent_pod("waiting-pod", "waiting", image))
        message = json.loads(refused.value.body)["message"]
        assert "namespace-served:" in message and "is not served by this operator" in message, message
    finally:
        release.cluster.core.delete_namespace(idle)


@pytest.mark.skipif(
    os.environ.get("KIND_ROTATION") != "1", reason="takes 9 minutes: the kubelet rotates at 480 s (KIND_ROTATION=1)"
)
def test_the_token_the_kubelet_rotates_keeps_working_while_the_identity_lives(
    release: Release, settled: list[str], image: str
) -> None:
    manifest = release.identity("rotating-agent", ttl="12m", token={"delivery": "Projected"})
    name, namespace = manifest["metadata"]["name"], release.served
    release.cluster.create_identity(manifest)
    release.cluster.wait_phase(namespace, name, "Ready")
    pod = release.cluster.core.create_namespaced_pod(namespace, agent_pod(f"{name}-pod", name, image, interval_s=5))

    def rotated() -> list[dict[str, Any]] | None:
        lines = log_lines(release, namespace, pod.metadata.name)
        return lines if len({line["token"] for line in lines}) > 1 and lines[-1]["token"] != lines[0]["token"] else None

    lines = wait_for("the kubelet to rotate the token", rotated, timeout=600, interval=10)
    first = lines[0]["token"]
    rotated_at = next(index for index, line in enumerate(lines) if line["token"] != first)
    wait_for(
        "three calls with the new token",
        lambda: len(log_lines(release, namespace, pod.metadata.name)) >= len(lines) + 3 or None,
        timeout=60,
    )
    after = log_lines(release, namespace, pod.metadata.name)[rotated_at:]
    assert {(line["in_scope"], line["out_of_scope"]) for line in after} == {(200, 403)}, after
    rotated_at_s = (
        datetime.fromisoformat(lines[rotated_at]["t"].replace("Z", "+00:00")) - pod.metadata.creation_timestamp
    ).total_seconds()
    print(f"\ntoken rotated by the kubelet {rotated_at_s:.0f} s after the pod was created; {len(after)} calls since, all 200/403")
    release.record("kubelet_rotation", {"rotated_after_s": rotated_at_s, "calls_with_the_new_token": len(after)})
    release.cluster.core.delete_namespaced_pod(pod.metadata.name, namespace)
