"""spec.boundTo (#33 part 1) on a real API server, the webhooks really called: an identity bound
to a Pod, to its agent pods or to a Job retires (TaskCompleted) the moment that workload ends,
its delegates with it; and the attacks: someone else's Job or pod of the bound name, binding
someone else's identity to your Job, forging the binding after admission.

The local control plane has no kubelet: a pod's end is written to its status as the kubelet
would write it. alice and mallory hold the built-in ``edit`` role plus rights on identities.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from support.cluster import GROUP, PLURAL, VERSION, Cluster, impersonated, impersonating, make_identity
from support.webhooks import served_with_people

pytestmark = pytest.mark.e2e

LABEL, JUDGED = "agentidentity.dev/identity", "agentidentity.dev/judged-for-uid"


@dataclass
class Arena:
    cluster: Cluster
    namespace: str

    def ready(self, name: str, user: str = "alice", **spec: Any) -> dict[str, Any]:
        manifest = make_identity(name, self.namespace, **spec)
        impersonating(self.cluster, user).create_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, manifest)
        return self.cluster.wait_phase(self.namespace, name, "Ready")

    def pod(self, user: str, name: str, identity: str | None) -> Any:
        body = {
            "metadata": {"name": name, "labels": {LABEL: identity} if identity else {}},
            "spec": {"containers": [{"name": "agent", "image": "agent:local"}]},
        }
        return client.CoreV1Api(impersonated(self.cluster, user)).create_namespaced_pod(self.namespace, body)

    def job(self, user: str, name: str, identity: str | None, *, forged_uid: str | None = None) -> Any:
        labels = {LABEL: identity} if identity else {}
        annotations = {JUDGED: forged_uid} if forged_uid else {}
        body = {
            "metadata": {"name": name, "labels": labels},
            "spec": {
                "template": {
                    "metadata": {"labels": labels, "annotations": annotations},
                    "spec": {"restartPolicy": "Never", "containers": [{"name": "agent", "image": "agent:local"}]},
                }
            },
        }
        return client.BatchV1Api(impersonated(self.cluster, user)).create_namespaced_job(self.namespace, body)

    def terminate(self, pod: str) -> float:
        """What the kubelet writes when the pod's containers exited; when it was written."""
        self.cluster.core.patch_namespaced_pod_status(pod, self.namespace, {"status": {"phase": "Succeeded"}})
        return time.monotonic()

    def retired(self, name: str, *, since: float | None = None) -> tuple[dict[str, Any], float]:
        body = self.cluster.wait_phase(self.namespace, name, "Expired")
        lag = time.monotonic() - since if since is not None else 0.0
        ready = {c["type"]: c for c in body["status"]["conditions"]}["Ready"]
        assert ready["reason"] == "TaskCompleted", ready
        assert not any(self.cluster.children(self.namespace, name).values())
        return ready, lag


@pytest.fixture(scope="module")
def arena(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Arena]:
    with served_with_people(cluster, tmp_path_factory.mktemp("bound"), "bound") as namespace:
        yield Arena(cluster, namespace)


def test_a_pod_bound_identity_retires_when_its_pod_terminates(arena: Arena) -> None:
    arena.ready("pod-agent", boundTo={"kind": "Pod", "name": "pod-agent-run"})
    arena.ready("pod-helper", delegator={"kind": "AgentIdentity", "name": "pod-agent"}, ttl="5m")
    arena.pod("alice", "pod-agent-run", "pod-agent")
    time.sleep(1)
    assert arena.cluster.phase(arena.namespace, "pod-agent") == "Ready"  # running: its task goes on
    ready, lag = arena.retired("pod-agent", since=arena.terminate("pod-agent-run"))
    assert "pod-agent-run terminated" in ready["message"]
    assert lag < 5, lag  # the watch, not a resync, brought it (the bench measures the figure)
    assert arena.cluster.wait_phase(arena.namespace, "pod-helper", "Expired")["status"]["phase"] == "Expired"


def test_agent_pods_bound_identity_retires_after_the_last_pod(arena: Arena) -> None:
    arena.ready("fleet", boundTo={"kind": "AgentPods"})
    for index in (1, 2):
        arena.pod("alice", f"fleet-{index}", "fleet")
    arena.terminate("fleet-1")
    time.sleep(1.5)
    assert arena.cluster.phase(arena.namespace, "fleet") == "Ready"  # one still runs
    arena.cluster.core.delete_namespaced_pod("fleet-2", arena.namespace, grace_period_seconds=0)
    ready, _ = arena.retired("fleet")
    assert "every pod running as aid-fleet has terminated" in ready["message"]


def test_a_job_bound_identity_retires_when_its_job_goes(arena: Arena) -> None:
    arena.ready("batch", boundTo={"kind": "Job", "name": "batch-run"})
    arena.job("alice", "batch-run", "batch")
    body = arena.cluster.wait_phase(arena.namespace, "batch", "Ready")
    deadline = time.monotonic() + 10
    while not (body.get("status") or {}).get("boundWorkloadUID") and time.monotonic() < deadline:
        time.sleep(0.2)
        body = arena.cluster.get_identity(arena.namespace, "batch") or {}
    assert body["status"]["boundWorkloadUID"]  # seen: the Job runs as the agent
    client.BatchV1Api(arena.cluster.api_client).delete_namespaced_job(
        "batch-run", arena.namespace, propagation_policy="Background"
    )
    ready, _ = arena.retired("batch")
    assert "batch-run was deleted" in ready["message"]


def test_someone_elses_job_or_pod_of_the_bound_name_ends_nothing(arena: Arena) -> None:
    victim = arena.ready("victim", boundTo={"kind": "Job", "name": "victim-run"})
    batch = client.BatchV1Api(impersonated(arena.cluster, "mallory"))
    # Binding alice's identity to mallory's Job: the workload webhook judges mallory and refuses.
    with pytest.raises(ApiException) as refused:
        arena.job("mallory", "victim-run", "victim")
    assert refused.value.status in (400, 403) and "victim" in json.loads(refused.value.body)["message"]
    # Unlabelled (so no webhook sees it), with the victim's uid forged onto the template: not the agent's.
    arena.job("mallory", "victim-run", None, forged_uid=victim["metadata"]["uid"])
    batch.delete_namespaced_job("victim-run", arena.namespace, propagation_policy="Background")
    # A pod of the bound name that does not run as the agent, terminated.
    arena.ready("victim-pod", boundTo={"kind": "Pod", "name": "victim-pod-run"})
    arena.pod("mallory", "victim-pod-run", None)
    arena.terminate("victim-pod-run")
    time.sleep(2)
    assert arena.cluster.phase(arena.namespace, "victim") == "Ready"
    assert arena.cluster.phase(arena.namespace, "victim-pod") == "Ready"


def test_the_binding_cannot_be_forged_or_stripped_after_admission(arena: Arena) -> None:
    arena.ready("sealed-binding", boundTo={"kind": "Pod", "name": "a"})
    arena.ready("unbound")
    for user in ("mallory", "alice"):
        api = impersonating(arena.cluster, user)
        for name, patch in (
            ("sealed-binding", {"spec": {"boundTo": {"kind": "Pod", "name": "b"}}}),
            ("sealed-binding", {"spec": {"boundTo": None}}),
            ("unbound", {"spec": {"boundTo": {"kind": "AgentPods"}}}),
        ):
            with pytest.raises(ApiException) as refused:
                api.patch_namespaced_custom_object(GROUP, VERSION, arena.namespace, PLURAL, name, patch)
            assert refused.value.status in (403, 422) and "boundTo" in json.loads(refused.value.body)["message"]
