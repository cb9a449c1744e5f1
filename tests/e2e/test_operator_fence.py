"""The chart's fence on a real API server: rendered by the pinned Helm, installed with the chart's
operator RBAC, then exercised AS the operator's ServiceAccount (a TokenRequest token for it, so the
API server authenticates it exactly as it would the operator Pod).

What RBAC allows the operator but it never does is refused, with a 403 naming the policy and
saying why: a token for another ServiceAccount, a Secret or Role that is not an agent's, deleting
a workload's ServiceAccount, the ceilings used for itself, a RoleBinding to anything but the agent's
own Role. What it does is admitted: an agent's labelled ServiceAccount, Secret, Role and RoleBinding,
a token bound to the agent's Secret, its key Secrets at home. Anyone else is untouched.

That the operator itself works under the fence is shown by tests/e2e/test_helm_install.py and
tests/e2e/test_operator_rbac.py, which run it with the fence installed.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config, utils
from kubernetes.client.rest import ApiException

from agent_identity.engine.pod_security import REASON
from agent_identity.keys.keystore import CONFIGMAP_NAME, SEAL_SECRET_NAME
from agent_identity.plan.children import LABEL_MANAGED_BY, MANAGED_BY, SECRET_TYPE
from support import fence
from support.cluster import Cluster, make_identity, wait_for
from support.tools import render_chart

pytestmark = pytest.mark.e2e

RELEASE = "fence-test"  # object names of its own, apart from the other tests' agent-identity-operator
FULLNAME = f"{RELEASE}-agent-identity-operator"
POLICY = f"{FULLNAME}-fence"
RBAC_KINDS = ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")
OURS = {LABEL_MANAGED_BY: MANAGED_BY}
READ_CONFIGMAPS = [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}]  # within the read-only ceiling


@dataclass
class Operator:
    """Clients that authenticate as the operator's ServiceAccount, and where it lives and serves."""

    core: client.CoreV1Api
    rbac: client.RbacAuthorizationV1Api
    home: str
    served: str


@pytest.fixture
def operator(cluster: Cluster, namespace: str, tmp_path: Path) -> Iterator[Operator]:
    home = cluster.create_test_namespace("fence-home")
    objects = render_chart("--set", f"watchNamespaces={{{namespace}}}", release=RELEASE, namespace=home)
    rbac = [o for o in objects if o["kind"] in RBAC_KINDS]
    policy = [o for o in objects if fence.is_fence(o)]
    assert [p["metadata"]["name"] for p in policy] == [POLICY, POLICY]
    try:
        utils.create_from_yaml(cluster.api_client, yaml_objects=rbac)
        fence.install(cluster, policy)
        kubeconfig = cluster.service_account_kubeconfig(home, FULLNAME, tmp_path / "operator.kubeconfig")
        api = config.new_client_from_config(config_file=str(kubeconfig))
        fenced = Operator(core=client.CoreV1Api(api), rbac=client.RbacAuthorizationV1Api(api), home=home, served=namespace)
        fence.wait_active(fenced.core, served_namespace=namespace, policy=POLICY)
        yield fenced
    finally:
        fence.remove(cluster, policy)
        for obj in rbac:
            if obj["kind"] == "ClusterRole":
                _ignore_missing(cluster.rbac.delete_cluster_role, obj["metadata"]["name"])
            elif obj["kind"] == "ClusterRoleBinding":
                _ignore_missing(cluster.rbac.delete_cluster_role_binding, obj["metadata"]["name"])
            elif obj["metadata"].get("namespace") not in (home, namespace):  # the Events Role in default
                rbac = cluster.rbac
                delete = rbac.delete_namespaced_role if obj["kind"] == "Role" else rbac.delete_namespaced_role_binding
                _ignore_missing(partial(delete, namespace=obj["metadata"]["namespace"]), obj["metadata"]["name"])
        cluster.delete_namespace(home)


def _ignore_missing(delete: Callable[[str], object], name: str) -> None:
    try:
        delete(name)
    except ApiException as error:
        if error.status != 404:
            raise


def refused(call: Callable[[], object]) -> str:
    """The API server's message for a call the fence refuses (a 403 that names the policy)."""
    with pytest.raises(ApiException) as caught:
        call()
    assert caught.value.status == 403, caught.value.body
    message = str(json.loads(caught.value.body)["message"])
    assert f"ValidatingAdmissionPolicy '{POLICY}'" in message, message
    return message


def meta(name: str, *, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"name": name, "labels": labels} if labels else {"name": name}


def token_request(*, bound_secret: dict[str, Any] | None = None, seconds: int = 600) -> dict[str, Any]:
    spec: dict[str, Any] = {"expirationSeconds": seconds}
    if bound_secret is not None:
        spec["boundObjectRef"] = {
            "apiVersion": "v1",
            "kind": "Secret",
            "name": bound_secret["name"],
            "uid": bound_secret["uid"],
        }
    return {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec}


def agent(op: Operator, name: str) -> dict[str, Any]:
    """An agent's ServiceAccount and token Secret, written as the operator writes them."""
    op.core.create_namespaced_service_account(
        op.served, {"metadata": meta(name, labels=OURS), "automountServiceAccountToken": False}
    )
    secret = op.core.create_namespaced_secret(op.served, {"metadata": meta(f"{name}-token", labels=OURS), "type": SECRET_TYPE})
    return {"name": secret.metadata.name, "uid": secret.metadata.uid}


def role(name: str, *, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"metadata": meta(name, labels=labels), "rules": READ_CONFIGMAPS}


def binding(name: str, namespace: str, *, role_kind: str = "Role", role_name: str | None = None) -> dict[str, Any]:
    return {
        "metadata": meta(name, labels=OURS),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role_name or name},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
    }


def test_the_fence_refuses_what_rbac_allows_but_the_operator_never_does(cluster: Cluster, operator: Operator) -> None:
    served = operator.served

    # A token for a ServiceAccount that is not an agent's: RBAC allows serviceaccounts/token here.
    message = refused(lambda: operator.core.create_namespaced_service_account_token("default", served, token_request()))
    assert "mints tokens only for its agents' ServiceAccounts (aid-<identity>)" in message
    assert f"refused a token for ServiceAccount {served}/default" in message

    # A Secret that is not an agent's, even with the operator's label.
    stolen = {"metadata": meta("stolen", labels=OURS), "type": SECRET_TYPE, "stringData": {"key": "value"}}
    message = refused(lambda: operator.core.create_namespaced_secret(served, stolen))
    assert f"are named aid-<identity>: refused CREATE secrets {served}/stolen" in message

    # A Role that is not an agent's, although within the ceilings the operator holds.
    message = refused(lambda: operator.rbac.create_namespaced_role(served, role("reader", labels=OURS)))
    assert f"are named aid-<identity>: refused CREATE roles.rbac.authorization.k8s.io {served}/reader" in message

    # Deleting a workload's ServiceAccount.
    cluster.core.create_namespaced_service_account(served, {"metadata": {"name": "workload"}})
    message = refused(lambda: operator.core.delete_namespaced_service_account("workload", served))
    assert f"are named aid-<identity>: refused DELETE serviceaccounts {served}/workload" in message
    assert cluster.has_service_account(served, "workload")


def test_the_operator_writes_its_agents_and_their_tokens(cluster: Cluster, operator: Operator) -> None:
    served, home = operator.served, operator.home
    secret = agent(operator, "aid-x")
    issued = operator.core.create_namespaced_service_account_token("aid-x", served, token_request(bound_secret=secret))
    review = cluster.token_review(issued.status.token)
    assert review["authenticated"] and review["username"] == f"system:serviceaccount:{served}:aid-x"
    # The token into its Secret (a merge patch, as the operator writes it), the Role and RoleBinding.
    encoded = base64.b64encode(issued.status.token.encode()).decode()
    operator.core.patch_namespaced_secret("aid-x-token", served, {"data": {"token": encoded}})
    operator.rbac.create_namespaced_role(served, role("aid-x", labels=OURS))
    operator.rbac.create_namespaced_role_binding(served, binding("aid-x", served))
    # Drift repair: a child whose label someone removed is still the operator's (its identity owns it).
    identity = cluster.create_identity(make_identity("x", served))  # no operator runs: it stays a record
    owner = {"apiVersion": identity["apiVersion"], "kind": "AgentIdentity", "name": "x", "uid": identity["metadata"]["uid"]}
    cluster.core.patch_namespaced_service_account(
        "aid-x", served, {"metadata": {"labels": {LABEL_MANAGED_BY: None}, "ownerReferences": [owner]}}
    )
    assert LABEL_MANAGED_BY not in (operator.core.read_namespaced_service_account("aid-x", served).metadata.labels or {})
    operator.core.patch_namespaced_service_account("aid-x", served, {"metadata": {"labels": OURS}})
    # Revocation: the agent's pods (one request), then each child deleted.
    pod = {"metadata": {"name": "agent"}, "spec": {"serviceAccountName": "aid-x", "containers": [{"name": "a", "image": "a"}]}}
    cluster.core.create_namespaced_pod(served, pod)
    operator.core.delete_collection_namespaced_pod(served, field_selector="spec.serviceAccountName=aid-x", grace_period_seconds=1)
    # Gone at once where no kubelet runs; where one does (kind), once it has stopped the pod.
    read_pod = lambda: cluster.core.read_namespaced_pod("agent", served)  # noqa: E731
    wait_for("the agent's pod deleted", lambda: cluster.call_status(read_pod) == 404)
    operator.rbac.delete_namespaced_role_binding("aid-x", served)
    operator.rbac.delete_namespaced_role("aid-x", served)
    operator.core.delete_namespaced_secret("aid-x-token", served)
    operator.core.delete_namespaced_service_account("aid-x", served)
    # At home: its key Secrets and the JWKS ConfigMap.
    seal = operator.core.create_namespaced_secret(home, {"metadata": meta(SEAL_SECRET_NAME, labels=OURS), "data": {}})
    seal.data = {"keys.json": base64.b64encode(b"[]").decode()}
    operator.core.replace_namespaced_secret(SEAL_SECRET_NAME, home, seal)
    operator.core.create_namespaced_config_map(home, {"metadata": meta(CONFIGMAP_NAME, labels=OURS), "data": {"jwks.json": "{}"}})
    # Events anywhere it serves.
    operator.core.create_namespaced_event(served, _event(served))
    # An Event about a served Namespace (no Pod Security enforced) lives in default, as kubectl describe expects.
    uid = cluster.core.read_namespace(served).metadata.uid
    about = {"apiVersion": "v1", "kind": "Namespace", "name": served, "uid": uid}
    event = {**_event(served), "metadata": {"generateName": "x.", "namespace": "default"}, "involvedObject": about}
    operator.core.create_namespaced_event("default", {**event, "type": "Warning", "reason": REASON})


def test_the_fence_closes_the_side_doors(cluster: Cluster, operator: Operator) -> None:
    served, home = operator.served, operator.home
    secret = agent(operator, "aid-y")

    # A Secret the token controller would fill with a non-expiring token for any ServiceAccount.
    legacy = {
        "metadata": {**meta("aid-z-token", labels=OURS), "annotations": {"kubernetes.io/service-account.name": "default"}},
        "type": "kubernetes.io/service-account-token",
    }
    assert "writes no kubernetes.io/service-account-token Secret" in refused(
        lambda: operator.core.create_namespaced_secret(served, legacy)
    )
    # Binding the operator's own namespace permissions (which RBAC lets it bind: it holds them).
    grab = binding("aid-y", served, role_kind="ClusterRole", role_name=f"{FULLNAME}:namespace")
    assert "binds its own Role aid-y to its own ServiceAccount aid-y only" in refused(
        lambda: operator.rbac.create_namespaced_role_binding(served, grab)
    )
    # Using a ceiling for itself (ci-runner's ceiling lets it create ConfigMaps here).
    leak = {"metadata": meta("leak"), "data": {"k": "v"}}
    assert f"writes ConfigMaps and Leases only in its own namespace {home}, and elsewhere creates only" in refused(
        lambda: operator.core.create_namespaced_config_map(served, leak)
    )
    # Or any other ceiling: ops-remediation's lets it delete Pods here, the fence only its agents'.
    pod = {"metadata": {"name": "web"}, "spec": {"containers": [{"name": "web", "image": "registry.invalid/web:1"}]}}
    cluster.core.create_namespaced_pod(served, pod)
    assert f"only those running as its agents (ServiceAccount aid-<identity>): refused DELETE pods {served}/web" in refused(
        lambda: operator.core.delete_namespaced_pod("web", served)
    )
    # At home, nothing but its own keys.
    assert f"in its own namespace {home} the operator writes only the Secrets" in refused(
        lambda: operator.core.create_namespaced_secret(home, {"metadata": meta("other")})
    )
    # An agent's token that the Secret does not bind, or that outlives any identity.
    assert "bound to its Secret aid-y-token" in refused(
        lambda: operator.core.create_namespaced_service_account_token("aid-y", served, token_request())
    )
    assert "lives at most 24h" in refused(
        lambda: operator.core.create_namespaced_service_account_token(
            "aid-y", served, token_request(bound_secret=secret, seconds=48 * 3600)
        )
    )
    # Taking over an aid-* object someone else made (no label, no AgentIdentity owner).
    cluster.core.create_namespaced_service_account(served, {"metadata": {"name": "aid-foreign"}})
    assert "changes and deletes only what it created" in refused(
        lambda: operator.core.patch_namespaced_service_account("aid-foreign", served, {"metadata": {"labels": OURS}})
    )
    assert "changes and deletes only what it created" in refused(
        lambda: operator.core.delete_namespaced_service_account("aid-foreign", served)
    )
    # The fence binds the operator only: the admin writes what it likes.
    cluster.core.create_namespaced_secret(served, {"metadata": {"name": "stolen"}})
    cluster.core.delete_namespaced_service_account("aid-foreign", served)


def _event(namespace: str) -> dict[str, Any]:
    return {
        "metadata": {"generateName": "x.", "namespace": namespace},
        "involvedObject": {
            "apiVersion": "agentidentity.dev/v1alpha1",
            "kind": "AgentIdentity",
            "name": "x",
            "namespace": namespace,
        },
        "reason": "Provisioned",
        "message": "fence test",
        "type": "Normal",
        "source": {"component": "agent-identity-operator"},
    }


def test_outside_its_namespace_the_operator_creates_only_its_agents_heartbeat_leases(operator: Operator) -> None:
    """#33: an agent with spec.heartbeat renews a Lease aid-<identity>-heartbeat that the operator
    creates in the agent's namespace; the operator may not create any other Lease there, nor
    change or delete one (its agents renew them; the garbage collector deletes them)."""
    leases = client.CoordinationV1Api(operator.core.api_client)
    served = operator.served

    def lease(name: str, labels: dict[str, str] | None = OURS) -> dict[str, Any]:
        return {"metadata": meta(name, labels=labels), "spec": {"holderIdentity": "aid-x", "leaseDurationSeconds": 30}}

    leases.create_namespaced_lease(served, lease("aid-x-heartbeat"))
    for name, labels in (("kube-scheduler", OURS), ("aid-x-leader", OURS), ("aid-y-heartbeat", None)):
        assert "creates only its agents' heartbeat Leases" in refused(
            lambda name=name, labels=labels: leases.create_namespaced_lease(served, lease(name, labels))
        )
    assert "creates only its agents' heartbeat Leases" in refused(
        lambda: leases.patch_namespaced_lease("aid-x-heartbeat", served, {"spec": {"leaseDurationSeconds": 86400}})
    )
    with pytest.raises(ApiException) as caught:  # not even in its RBAC: the garbage collector deletes them
        leases.delete_namespaced_lease("aid-x-heartbeat", served)
    assert caught.value.status == 403
