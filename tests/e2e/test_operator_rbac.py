"""The operator runs with exactly the RBAC that ``agent_identity.app.operator_rbac`` documents: no escalate,
no bind, no impersonate, no cluster-wide wildcards, tokens only in the namespaces it serves. And it
runs under the chart's fence (the ValidatingAdmissionPolicy on its own ServiceAccount), which
refuses every write it does not need."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config, utils

from agent_identity.api.v1alpha1 import PolicyRule
from agent_identity.app.operator_rbac import EVENTS_ROLE, NAME, operator_rbac
from agent_identity.engine.pod_security import REASON
from support import fence
from support.cluster import GROUP, VERSION, Cluster, make_identity, wait_for
from support.webhooks import operator_with_webhooks

CEILING = [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}]


@pytest.fixture
def operator_namespace(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    name = cluster.create_test_namespace("operator-home")
    yield name
    cluster.delete_namespace(name)


def may(cluster: Cluster, operator_namespace: str, attributes: dict[str, Any]) -> bool:
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {
            "user": f"system:serviceaccount:{operator_namespace}:{NAME}",
            "groups": ["system:serviceaccounts", f"system:serviceaccounts:{operator_namespace}", "system:authenticated"],
            "resourceAttributes": attributes,
        },
    }
    return bool(client.AuthorizationV1Api(cluster.api_client).create_subject_access_review(review).status.allowed)


FORBIDDEN = [  # (namespace placeholder "SERVED" is replaced by the served namespace)
    {"namespace": "SERVED", "verb": "escalate", "group": "rbac.authorization.k8s.io", "resource": "roles"},
    {"namespace": "SERVED", "verb": "bind", "group": "rbac.authorization.k8s.io", "resource": "roles"},
    {"verb": "impersonate", "group": "", "resource": "users"},
    {"namespace": "default", "verb": "create", "group": "", "resource": "serviceaccounts", "subresource": "token"},
    {"namespace": "default", "verb": "list", "group": "", "resource": "secrets"},
    # Agent pods are read (spec.boundTo, #33; the operator reads Secrets there anyway), never entered or changed.
    {"namespace": "SERVED", "verb": "create", "group": "", "resource": "pods", "subresource": "exec"},
    {"namespace": "SERVED", "verb": "patch", "group": "", "resource": "pods"},
    {"namespace": "SERVED", "verb": "create", "group": "", "resource": "pods"},
    {"verb": "create", "group": "rbac.authorization.k8s.io", "resource": "clusterroles"},
    {"verb": "update", "group": "admissionregistration.k8s.io", "resource": "validatingwebhookconfigurations"},
    {"namespace": "SERVED", "verb": "*", "group": "*", "resource": "*"},
    # Namespaces: its served one only (below), and none listed or changed.
    {"namespace": "kube-system", "verb": "get", "group": "", "resource": "namespaces", "name": "kube-system"},
    {"verb": "list", "group": "", "resource": "namespaces"},
    {"namespace": "SERVED", "verb": "update", "group": "", "resource": "namespaces", "name": "SERVED"},
    {"namespace": "kube-system", "verb": "create", "group": "", "resource": "events"},
]


def test_the_documented_rbac_is_sufficient_and_grants_nothing_dangerous(
    cluster: Cluster, namespace: str, operator_namespace: str, tmp_path: Path
) -> None:
    objects = operator_rbac(
        operator_namespace=operator_namespace,
        served_namespaces=[namespace],
        ceilings=[PolicyRule.model_validate(rule) for rule in CEILING],
    )
    utils.create_from_yaml(cluster.api_client, yaml_objects=objects)
    policy = fence.fence_objects(release=NAME, namespace=operator_namespace)
    fence.install(cluster, policy)
    profile_name = f"ceiling-{namespace}"[:63]
    cluster.custom.create_cluster_custom_object(
        GROUP,
        VERSION,
        "agentprofiles",
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "AgentProfile",
            "metadata": {"name": profile_name},
            "spec": {"riskLevel": "low", "maxTTL": "10m", "permissionCeiling": CEILING},
        },
    )
    try:
        kubeconfig = cluster.service_account_kubeconfig(operator_namespace, NAME, tmp_path / "operator.kubeconfig")
        as_operator = client.CoreV1Api(config.new_client_from_config(config_file=str(kubeconfig)))
        fence.wait_active(as_operator, served_namespace=namespace, policy=policy[0]["metadata"]["name"])
        home = ["--operator-namespace", operator_namespace]  # where its RBAC (and the fence) let it keep its keys
        with operator_with_webhooks(cluster, namespace, tmp_path, kubeconfig=kubeconfig, extra_args=home) as process:
            cluster.create_identity(
                make_identity("scoped", namespace, profile=profile_name, ttl="10m", delegator={"kind": "User", "name": "admin"})
            )
            cluster.create_identity(
                make_identity("brief", namespace, profile=profile_name, ttl="10s", delegator={"kind": "User", "name": "admin"})
            )
            ready = cluster.wait_phase(namespace, "scoped", "Ready")
            assert ready["status"]["riskLevel"] == "low"
            token = cluster.token_secret(namespace, "scoped")["token"]
            assert cluster.token_review(token)["authenticated"] is True
            cluster.wait_phase(namespace, "brief", "Expired", timeout=25)
            assert not any(cluster.children(namespace, "brief").values())
            cluster.delete_identity(namespace, "scoped")
            wait_for("revoked by the restricted operator", lambda: not any(cluster.children(namespace, "scoped").values()))
            # The served namespace has no Pod Security label: the Warning Event about it, in default.
            selector = f"involvedObject.kind=Namespace,involvedObject.name={namespace},reason={REASON}"
            events = cluster.core.list_namespaced_event
            wait_for("the Pod Security warning", lambda: events("default", field_selector=selector).items)
            assert "Forbidden" not in process.output(), "the RBAC or the fence refused the operator something"

        allowed = [a for a in FORBIDDEN if may(cluster, operator_namespace, _in(a, namespace))]
        assert allowed == []
        token_here = {
            "namespace": namespace,
            "verb": "create",
            "group": "",
            "resource": "serviceaccounts",
            "subresource": "token",
        }
        assert may(cluster, operator_namespace, token_here)
        its_namespace = {"namespace": namespace, "verb": "get", "group": "", "resource": "namespaces", "name": namespace}
        assert may(cluster, operator_namespace, its_namespace)
    finally:
        fence.remove(cluster, policy)
        cluster.custom.delete_cluster_custom_object(GROUP, VERSION, "agentprofiles", profile_name)
        rbac = client.RbacAuthorizationV1Api(cluster.api_client)
        for role in (NAME, f"{NAME}:namespace", f"{NAME}:ceilings"):
            rbac.delete_cluster_role(role)
        rbac.delete_cluster_role_binding(NAME)
        rbac.delete_namespaced_role_binding(EVENTS_ROLE, "default")
        rbac.delete_namespaced_role(EVENTS_ROLE, "default")


def _in(attributes: dict[str, str], namespace: str) -> dict[str, str]:
    return {key: namespace if value == "SERVED" else value for key, value in attributes.items()}
