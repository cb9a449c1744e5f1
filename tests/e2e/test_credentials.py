"""The credential an AgentIdentity becomes: real TokenReview, real RBAC, real calls."""

from __future__ import annotations

import json
import tempfile
from datetime import datetime, timedelta

import yaml
from kubernetes import client, config

from support.cluster import SELF_RETIRE_RULE, Cluster, make_identity, wait_for
from support.operator_process import OperatorProcess


def parse(ts: str) -> datetime:
    return datetime.fromisoformat(ts.replace("Z", "+00:00"))


def test_token_authenticates_and_holds_exactly_its_scopes(cluster: Cluster, namespace: str, operator: OperatorProcess) -> None:
    cluster.create_identity(make_identity("reader", namespace, ttl="10m"))
    identity = cluster.wait_phase(namespace, "reader", "Ready")
    status = identity["status"]
    assert status["serviceAccountName"] == "aid-reader"
    assert status["serviceAccountUID"] == cluster.core.read_namespaced_service_account("aid-reader", namespace).metadata.uid
    assert status["tokenSecretName"] == "aid-reader-token"
    assert status["delegationChain"] == ["user:alice"]
    created = parse(identity["metadata"]["creationTimestamp"])
    assert parse(status["expiresAt"]) == created + timedelta(minutes=10)
    # TokenRequest's floor is 10 minutes; what was granted is what the status reports, covering the TTL
    assert parse(status["tokenExpiresAt"]) >= parse(status["expiresAt"])
    ready = {c["type"]: c for c in status["conditions"]}["Ready"]
    assert ready["status"] == "True" and ready["observedGeneration"] == identity["metadata"]["generation"]

    data = cluster.token_secret(namespace, "reader")
    assert set(data) == {"token", "ca.crt", "namespace", "kubeconfig"}
    assert data["namespace"] == namespace
    review = cluster.token_review(data["token"])
    assert review == {"authenticated": True, "username": f"system:serviceaccount:{namespace}:aid-reader", "error": None}

    agent = cluster.as_token(data["token"])
    assert cluster.call_status(lambda: agent.list_namespaced_config_map(namespace)) == 200
    assert cluster.call_status(lambda: agent.list_namespaced_secret(namespace)) == 403  # not in its scopes
    assert cluster.call_status(lambda: agent.create_namespaced_config_map(namespace, {"metadata": {"name": "x"}})) == 403
    assert cluster.call_status(lambda: agent.list_namespaced_config_map("default")) == 403  # other namespace


def test_the_secrets_kubeconfig_works_as_is(cluster: Cluster, namespace: str, operator: OperatorProcess) -> None:
    cluster.create_identity(make_identity("kubeconfig-user", namespace))
    cluster.wait_phase(namespace, "kubeconfig-user", "Ready")
    kubeconfig = cluster.token_secret(namespace, "kubeconfig-user")["kubeconfig"]
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as handle:
        handle.write(kubeconfig)
        handle.flush()
        agent = client.CoreV1Api(config.new_client_from_config(config_file=handle.name))
        assert yaml.safe_load(kubeconfig)["contexts"][0]["context"]["namespace"] == namespace
        assert cluster.call_status(lambda: agent.list_namespaced_config_map(namespace)) == 200


def test_custom_audiences_bind_the_token_to_them(cluster: Cluster, namespace: str, operator: OperatorProcess) -> None:
    cluster.create_identity(make_identity("vault-client", namespace, token={"audiences": ["vault.example"]}))
    cluster.wait_phase(namespace, "vault-client", "Ready")
    token = cluster.token_secret(namespace, "vault-client")["token"]
    assert cluster.token_review(token, audiences=["vault.example"])["authenticated"] is True
    # the API server's own audience is not among them, so it refuses the token
    assert cluster.token_review(token)["authenticated"] is False


def test_every_child_is_labelled_annotated_and_owned(cluster: Cluster, namespace: str, operator: OperatorProcess) -> None:
    created = cluster.create_identity(make_identity("labelled", namespace, task="label check"))
    cluster.wait_phase(namespace, "labelled", "Ready")
    assert cluster.children(namespace, "labelled") == {
        "ServiceAccount": ["aid-labelled"],
        "Role": ["aid-labelled"],
        "RoleBinding": ["aid-labelled"],
        "Secret": ["aid-labelled-token"],
    }
    sa = cluster.core.read_namespaced_service_account("aid-labelled", namespace)
    assert sa.automount_service_account_token is False
    assert sa.metadata.annotations["agentidentity.dev/task"] == "label check"
    assert sa.metadata.annotations["agentidentity.dev/delegator"] == "user:alice"
    assert json.loads(sa.metadata.annotations["agentidentity.dev/delegation-chain"]) == ["user:alice"]
    assert [(ref.kind, ref.uid) for ref in sa.metadata.owner_references] == [("AgentIdentity", created["metadata"]["uid"])]
    role = cluster.rbac.read_namespaced_role("aid-labelled", namespace)
    assert [(r.api_groups, r.resources, r.verbs) for r in role.rules] == [
        ([""], ["configmaps"], ["get", "list"]),
        SELF_RETIRE_RULE,
    ]
    assert role.rules[-1].resource_names == ["labelled"]  # its own AgentIdentity, no other
    events = wait_for("a Provisioned event", lambda: "Provisioned" in cluster.events(namespace, "labelled"))
    assert events


def test_audit_lines_record_the_lifecycle_and_no_output_carries_a_token(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    cluster.create_identity(make_identity("audited", namespace, ttl="10s"))
    cluster.wait_phase(namespace, "audited", "Ready")
    token = cluster.token_secret(namespace, "audited")["token"]
    cluster.wait_phase(namespace, "audited", "Expired", timeout=20)
    lines = wait_for(
        "the expired audit line",
        lambda: (
            [line for line in operator.audit_lines() if line["name"] == "audited"]
            if any(line["action"] == "expired" for line in operator.audit_lines())
            else None
        ),
    )
    assert [line["action"] for line in lines] == ["token_issued", "provisioned", "expired"]
    for line in lines:
        assert line["namespace"] == namespace and line["task"] == "test task for audited"
        # The person is pseudonymised (keys/subjects.py): one subject id, the name sealed.
        assert line["delegationChain"] == [line["delegator"]] and line["delegator"].startswith("subject:") and line["uid"]
        assert "alice" not in json.dumps(line)
    everything = operator.output() + json.dumps(cluster.get_identity(namespace, "audited"))
    everything += " ".join(str(e.message) for e in cluster.core.list_namespaced_event(namespace).items)
    for fragment in (token, *token.split(".")):
        assert fragment not in everything
