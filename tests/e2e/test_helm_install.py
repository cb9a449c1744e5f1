"""`helm install` against the real API server, then the operator run out of cluster with the
chart's own ServiceAccount credentials: it provisions, retires, revokes and serves webhooks with
exactly the chart's RBAC and under the chart's fence (the ValidatingAdmissionPolicy that refuses
its ServiceAccount every write it does not need), and that RBAC grants nothing beyond the
documented list.

No kubelet runs on the local control plane, so the chart's Deployment is accepted but its pod
never starts, and the webhook Service has no endpoints: the test points the chart's webhook
configurations at the operator it runs on this machine instead (same paths, its own CA bundle).
On a cluster with a kubelet (kind) the pods wait for an image tag no node has (make kind-e2e
loads the operator image under a tag of its content, after this suite), so the same holds there.
"""

from __future__ import annotations

import base64
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from kubernetes import client, config

from agent_identity.app.operator_rbac import CLUSTER_RULES, NAMESPACE_RULES, OWN_NAMESPACE_RULES
from support import fence
from support.cluster import Cluster, make_identity, wait_for
from support.operator_process import OperatorProcess
from support.tools import helm_binary
from support.webhooks import free_port, wait_listening, webhook_args, webhook_url

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "agent-identity-operator"
RELEASE = "agent-identity-operator"
# What every authenticated user may do anyway (system:basic-user, system:discovery, ...).
DEFAULT_RULES = {
    ("create", "authorization.k8s.io", "selfsubjectaccessreviews"),
    ("create", "authorization.k8s.io", "selfsubjectrulesreviews"),
    ("create", "authentication.k8s.io", "selfsubjectreviews"),
}


@pytest.fixture
def helm() -> str:
    return helm_binary()


@pytest.fixture
def release_namespace(cluster: Cluster) -> Iterator[str]:
    name = cluster.create_test_namespace("helm-release")
    yield name
    cluster.delete_namespace(name)


def atoms(rules: list[dict[str, object]]) -> set[tuple[str, str, str]]:
    return {
        (verb, group, resource)
        for rule in rules
        for verb in rule["verbs"]  # type: ignore[attr-defined]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
    }  # type: ignore[attr-defined]


def point_webhooks_at(cluster: Cluster, *, port: int, ca_bundle: bytes) -> None:
    registration = client.AdmissionregistrationV1Api(cluster.api_client)
    for read, replace in (
        (registration.read_mutating_webhook_configuration, registration.replace_mutating_webhook_configuration),
        (registration.read_validating_webhook_configuration, registration.replace_validating_webhook_configuration),
    ):
        configuration = read(RELEASE)
        for webhook in configuration.webhooks:
            path = webhook.client_config.service.path
            webhook.client_config = client.AdmissionregistrationV1WebhookClientConfig(
                url=webhook_url(port, path), ca_bundle=base64.b64encode(ca_bundle).decode()
            )
        replace(RELEASE, configuration)


def test_helm_install_then_the_operator_works_with_exactly_the_charts_rbac(
    cluster: Cluster, namespace: str, release_namespace: str, helm: str, tmp_path: Path
) -> None:
    install = subprocess.run(
        [
            helm,
            "install",
            RELEASE,
            str(CHART),
            "--namespace",
            release_namespace,
            "--kubeconfig",
            str(cluster.kubeconfig),
            "--set",
            f"watchNamespaces={{{namespace}}}",
            "--timeout",
            "60s",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    try:
        assert install.returncode == 0, install.stderr
        apps = client.AppsV1Api(cluster.api_client)
        assert apps.read_namespaced_deployment(RELEASE, release_namespace).spec.template.spec.service_account_name == RELEASE

        kubeconfig = cluster.service_account_kubeconfig(release_namespace, RELEASE, tmp_path / "chart-sa.kubeconfig")
        as_operator = client.CoreV1Api(config.new_client_from_config(config_file=str(kubeconfig)))
        fence.wait_active(as_operator, served_namespace=namespace, policy=f"{RELEASE}-fence")

        port, cert_dir = free_port(), tmp_path / "certs"
        operator = OperatorProcess(
            kubeconfig=kubeconfig,
            namespace=namespace,
            log_dir=tmp_path,
            env={"POD_NAMESPACE": release_namespace},  # as the chart's Deployment sets it (downward API)
            extra_args=[*webhook_args(port, cert_dir), "--signing-namespace", release_namespace],
        )
        operator.start()
        try:
            wait_listening(port)
            point_webhooks_at(cluster, port=port, ca_bundle=(cert_dir / "ca.crt").read_bytes())
            delegator = {"kind": "User", "name": "admin"}
            cluster.create_identity(make_identity("charted", namespace, profile="read-only", ttl="10m", delegator=delegator))
            cluster.create_identity(make_identity("brief", namespace, profile="read-only", ttl="10s", delegator=delegator))
            ready = cluster.wait_phase(namespace, "charted", "Ready")
            assert ready["status"]["riskLevel"] == "low"
            assert ready["metadata"]["annotations"]["agentidentity.dev/creator"]  # stamped through the chart's webhook
            data = cluster.token_secret(namespace, "charted")
            assert cluster.token_review(data["token"])["authenticated"] is True and data["assertion"]
            cluster.wait_phase(namespace, "brief", "Expired", timeout=25)
            cluster.delete_identity(namespace, "charted")
            wait_for("revoked", lambda: not any(cluster.children(namespace, "charted").values()))
            assert "Forbidden" not in operator.output(), "the chart's RBAC or fence refused the operator something"

            review = client.AuthorizationV1Api(client.ApiClient(_token_configuration(cluster, tmp_path)))
            rules = review.create_self_subject_rules_review({"spec": {"namespace": namespace}}).status.resource_rules
            granted = {
                (verb, group, resource)
                for rule in rules
                for verb in rule.verbs
                for group in (rule.api_groups or [""])
                for resource in (rule.resources or [])
            }
            profiles = yaml.safe_load((CHART / "values.yaml").read_text())["profiles"]
            ceilings = [rule for profile in profiles for rule in profile["spec"]["permissionCeiling"]]
            expected = atoms(CLUSTER_RULES) | atoms(NAMESPACE_RULES) | atoms(ceilings) | DEFAULT_RULES
            assert granted - expected == set(), f"the chart grants more than documented: {sorted(granted - expected)}"
            assert atoms(NAMESPACE_RULES) <= granted
            assert not {atom for atom in granted if atom[0] in {"escalate", "bind", "impersonate", "*"} or atom[2] == "*"}
            own = review.create_self_subject_rules_review({"spec": {"namespace": release_namespace}}).status.resource_rules
            own_atoms = {
                (v, g, r) for rule in own for v in rule.verbs for g in (rule.api_groups or [""]) for r in (rule.resources or [])
            }
            assert atoms([{k: v for k, v in rule.items() if k != "resourceNames"} for rule in OWN_NAMESPACE_RULES]) <= own_atoms
        finally:
            operator.stop()
    finally:
        subprocess.run(
            [helm, "uninstall", RELEASE, "--namespace", release_namespace, "--kubeconfig", str(cluster.kubeconfig)],
            capture_output=True,
            check=False,
        )


def _token_configuration(cluster: Cluster, tmp_path: Path) -> client.Configuration:
    kubeconfig = yaml.safe_load((tmp_path / "chart-sa.kubeconfig").read_text())
    configuration = client.Configuration()
    configuration.host = cluster.host
    configuration.ssl_ca_cert = cluster.ca_file
    configuration.api_key = {"BearerToken": f"Bearer {kubeconfig['users'][0]['user']['token']}"}
    configuration.api_key_prefix = {}
    return configuration
