"""Nothing is believed from status, on a real API server with the webhooks really called.

The attacker, mallory, holds what a namespace's ``edit`` role gives on identities: create, get,
list, delete, and patch of ``agentidentities/status``. She rewrites ``status.expiresAt`` (and
``phase``) to lengthen an agent's life or its delegates'. Lifetimes come from the sealed spec and
the creation time only, so each attempt gains nothing.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kubernetes.client.rest import ApiException

from support.cluster import GROUP, IDENTITY_EDITOR, PLURAL, VERSION, Cluster, impersonating, make_identity
from support.operator_process import OperatorProcess
from support.webhooks import operator_with_webhooks

pytestmark = pytest.mark.e2e

CM_GET = {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}
A_YEAR_ON = (datetime.now(UTC) + timedelta(days=365)).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


@dataclass
class Scene:
    cluster: Cluster
    namespace: str
    profile: str
    operator: OperatorProcess

    def create(self, name: str, **spec: Any) -> dict[str, Any]:
        manifest = make_identity(
            name, self.namespace, **({"profile": self.profile, "delegator": None, "scopes": [CM_GET]} | spec)
        )
        api = impersonating(self.cluster, "mallory")
        return dict(api.create_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, manifest))

    def forge(self, name: str, status: dict[str, Any]) -> None:
        """What ``kubectl patch agentidentity <name> --subresource=status`` lets mallory write."""
        impersonating(self.cluster, "mallory").patch_namespaced_custom_object_status(
            GROUP, VERSION, self.namespace, PLURAL, name, {"status": status}
        )


def create_profile(cluster: Cluster, name: str) -> None:
    spec = {
        "riskLevel": "low",
        "maxTTL": "1h",
        "defaultTTL": "20s",
        "maxDelegationDepth": 2,
        "permissionCeiling": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}],
    }
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "AgentProfile", "metadata": {"name": name}, "spec": spec}
    cluster.custom.create_cluster_custom_object(GROUP, VERSION, "agentprofiles", body)


def delete_profile(cluster: Cluster, name: str) -> None:
    try:
        cluster.custom.delete_cluster_custom_object(GROUP, VERSION, "agentprofiles", name)
    except ApiException as error:
        if error.status != 404:
            raise


@pytest.fixture(scope="module")
def scene(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scene]:
    suffix = uuid.uuid4().hex[:5]
    namespace, profile = cluster.create_test_namespace(f"forgery-{suffix}"), f"forgery-{suffix}"
    create_profile(cluster, profile)
    cluster.grant(namespace, "mallory", IDENTITY_EDITOR)
    with operator_with_webhooks(cluster, namespace, tmp_path_factory.mktemp("forgery")) as process:
        yield Scene(cluster, namespace, profile, process)
    delete_profile(cluster, profile)
    cluster.delete_namespace(namespace)


def test_a_forged_expiry_does_not_outlast_the_profile_default_once_the_profile_is_gone(scene: Scene) -> None:
    """Attack: create an identity with no spec.ttl (it lives by its profile's defaultTTL), wait for
    its profile to be deleted (an administrator retiring it), then push status.expiresAt a year out
    so that, with nothing else to give a TTL, the operator takes the status's word for it."""
    doomed = f"{scene.profile}-doomed"
    create_profile(scene.cluster, doomed)
    scene.create("ageless", ttl=None, profile=doomed)
    ready = scene.cluster.wait_phase(scene.namespace, "ageless", "Ready")
    assert ready["spec"]["ttl"] == "20s"  # resolved at admission, into the sealed spec
    deadline = parse(ready["metadata"]["creationTimestamp"]) + timedelta(seconds=20)
    assert parse(ready["status"]["expiresAt"]) == deadline

    delete_profile(scene.cluster, doomed)
    scene.forge("ageless", {"expiresAt": A_YEAR_ON})

    expired = scene.cluster.wait_phase(scene.namespace, "ageless", "Expired", timeout=40)
    assert parse(expired["status"]["expiresAt"]) == deadline
    assert not any(scene.cluster.children(scene.namespace, "ageless").values())


def test_a_delegator_whose_expiry_is_forged_gives_its_delegate_no_longer_life(scene: Scene) -> None:
    """Attack: keep rewriting a short-lived delegator's status.expiresAt a year out (racing the
    operator, which puts it right) while creating delegates that would outlive the real one."""
    scene.create("planner", ttl="40s")
    scene.cluster.wait_phase(scene.namespace, "planner", "Ready")
    stop = threading.Event()

    def forge_forever() -> None:
        while not stop.is_set():
            scene.forge("planner", {"phase": "Ready", "expiresAt": A_YEAR_ON})

    forger = threading.Thread(target=forge_forever, daemon=True)
    forger.start()
    admitted: list[str] = []
    try:
        for attempt in range(15):
            name = f"crawler-{attempt}"
            try:
                scene.create(name, ttl="10m", delegator={"kind": "AgentIdentity", "name": "planner"})
            except ApiException as refused:
                assert refused.status in (403, 422), refused.body
                assert "delegate-not-outliving" in refused.body and "would outlive delegator 'planner'" in refused.body
            else:
                admitted.append(name)
    finally:
        stop.set()
        forger.join()
    assert admitted == [], f"admitted on a forged delegator expiry: {admitted}"
