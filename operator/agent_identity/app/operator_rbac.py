"""The operator's own RBAC, as data: the least it needs, and nothing it must not have.

Kubernetes lets a subject create a Role only with permissions it holds (or with ``escalate``, which
this operator never gets), and a RoleBinding only to a Role whose permissions it holds (or with
``bind``). So the design is: the operator *holds the profile ceilings* in the namespaces it serves
(``ceilings``), and nothing wider. Every agent Role it writes is a subset of a ceiling (the policy
checks make sure), so the API server's own escalation check passes without ``escalate`` or
``bind``. ``create serviceaccounts/token`` is granted only in the served namespaces, ``get`` of a
Namespace only of the served ones, and Events about Namespaces only in ``default``.

Used by the tests (to prove this RBAC is sufficient); the Helm chart renders the same objects
(tests/chart/test_chart.py compares them), plus the fence that narrows what the operator may write.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from agent_identity import GROUP, PLURAL
from agent_identity.api.v1alpha1 import PolicyRule
from agent_identity.engine.trail import CONFIGMAP_NAME as AUDIT_CONFIGMAP
from agent_identity.keys.keystore import CONFIGMAP_NAME as JWKS_CONFIGMAP
from agent_identity.keys.keystore import SEAL_SECRET_NAME as SEAL_SECRET
from agent_identity.keys.keystore import SECRET_NAME as SIGNING_SECRET
from agent_identity.keys.subjects import SECRET_NAME as SUBJECTS_SECRET
from agent_identity.kube.client import CLUSTER_EVENTS_NAMESPACE

NAME = "agent-identity-operator"
RBAC_API = "rbac.authorization.k8s.io"


def _rule(groups: list[str], resources: list[str], verbs: list[str]) -> dict[str, Any]:
    return {"apiGroups": groups, "resources": resources, "verbs": verbs}


# Cluster-wide: read profiles, review creators' permissions for the webhook.
CLUSTER_RULES = [
    _rule([GROUP], ["agentprofiles"], ["get", "list", "watch"]),
    _rule(["authorization.k8s.io"], ["subjectaccessreviews"], ["create"]),
]

# In each served namespace: the identities, their four children, tokens for them, Events, and agent pods.
NAMESPACE_RULES = [
    _rule([GROUP], [PLURAL], ["get", "list", "watch", "patch", "delete"]),
    _rule([GROUP], [f"{PLURAL}/status"], ["get", "patch"]),
    _rule([""], ["serviceaccounts", "secrets"], ["get", "list", "watch", "create", "update", "patch", "delete"]),
    _rule([""], ["serviceaccounts/token"], ["create"]),
    _rule([RBAC_API], ["roles", "rolebindings"], ["get", "list", "watch", "create", "update", "delete"]),
    _rule([""], ["events"], ["create"]),
    # The served Namespace itself (its Pod Security label): bound in a namespace, this grants that
    # Namespace only, since the API server authorizes GET /api/v1/namespaces/<ns> in <ns>.
    _rule([""], ["namespaces"], ["get"]),
    # Agent pods: deleted with their identity; the workloads that make them read by the pod webhook.
    # Agent pods and Jobs are also watched: an identity bound to its workload (spec.boundTo)
    # retires when that ends.
    _rule([""], ["pods"], ["get", "list", "watch", "deletecollection"]),
    _rule([""], ["replicationcontrollers"], ["get"]),
    _rule(["apps"], ["deployments", "replicasets", "statefulsets", "daemonsets"], ["get"]),
    _rule(["batch"], ["jobs"], ["get", "list", "watch"]),
    _rule(["batch"], ["cronjobs"], ["get"]),
    # Heartbeat Leases (spec.heartbeat): created here (the fence allows only aid-<identity>-heartbeat),
    # and held with get/update/patch so that each agent's Role may grant them on its own Lease.
    _rule(["coordination.k8s.io"], ["leases"], ["get", "create", "update", "patch"]),
]


# In the operator's own namespace: its key Secrets (signing keys, creator-seal keys, the audit
# trail's people's keys), the JWKS
# ConfigMap and the audit chain's heads, by name, its leader-election Lease and its seal ledger.
# RBAC cannot limit create by name: the chart's fence (a ValidatingAdmissionPolicy) refuses any
# other Secret or ConfigMap the operator would create there.
OWN_NAMESPACE_RULES = [
    {
        "apiGroups": [""],
        "resources": ["secrets"],
        "verbs": ["get", "update"],
        "resourceNames": [SIGNING_SECRET, SEAL_SECRET, SUBJECTS_SECRET],
    },
    {
        "apiGroups": [""],
        "resources": ["configmaps"],
        "verbs": ["get", "update"],
        "resourceNames": [JWKS_CONFIGMAP, AUDIT_CONFIGMAP],
    },
    _rule([""], ["secrets", "configmaps"], ["create"]),
    # The leader-election Lease (--leader-election-namespace is the operator's namespace), watched
    # so that a standby takes a released lease at once; and the seal ledger's Leases, created once
    # per identity and deleted once the seal's window closed (engine.seal_ledger).
    _rule(["coordination.k8s.io"], ["leases"], ["get", "list", "watch", "create", "update", "delete"]),
]
# The Role and RoleBinding in the operator's own namespace that grant OWN_NAMESPACE_RULES.
KEYS_ROLE = f"{NAME}-keys"

# Events about Namespaces (a served one without Pod Security enforcement) live in ``default``, as
# every Event about a cluster-scoped object, where ``kubectl describe namespace`` finds them.
CLUSTER_EVENTS_RULES = [_rule([""], ["events"], ["create"])]
# The Role and RoleBinding in CLUSTER_EVENTS_NAMESPACE that grant CLUSTER_EVENTS_RULES.
EVENTS_ROLE = f"{NAME}-events"


def _binding(kind: str, name: str, *, role_kind: str, role: str, account: str, namespace: str | None) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "labels": {"app.kubernetes.io/name": NAME}}
    if namespace:
        metadata["namespace"] = namespace
    return {
        "apiVersion": f"{RBAC_API}/v1",
        "kind": kind,
        "metadata": metadata,
        "roleRef": {"apiGroup": RBAC_API, "kind": role_kind, "name": role},
        "subjects": [{"kind": "ServiceAccount", "name": NAME, "namespace": account}],
    }


def operator_rbac(
    *, operator_namespace: str, served_namespaces: Sequence[str], ceilings: Sequence[PolicyRule]
) -> list[dict[str, Any]]:
    """ServiceAccount, ClusterRoles and bindings for an operator serving ``served_namespaces``
    with profiles whose permission ceilings are ``ceilings``."""

    def cluster_role(name: str, rules: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "apiVersion": f"{RBAC_API}/v1",
            "kind": "ClusterRole",
            "metadata": {"name": name, "labels": {"app.kubernetes.io/name": NAME}},
            "rules": rules,
        }

    def namespaced_role(name: str, namespace: str, rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """A Role in ``namespace`` and the RoleBinding that grants it to the operator."""
        metadata = {"name": name, "namespace": namespace, "labels": {"app.kubernetes.io/name": NAME}}
        return [
            {"apiVersion": f"{RBAC_API}/v1", "kind": "Role", "metadata": metadata, "rules": rules},
            _binding("RoleBinding", name, role_kind="Role", role=name, account=operator_namespace, namespace=namespace),
        ]

    ceiling_rules = [rule.model_dump(by_alias=True, exclude_none=True) for rule in ceilings]
    objects: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": NAME, "namespace": operator_namespace}},
        cluster_role(NAME, CLUSTER_RULES),
        cluster_role(f"{NAME}:namespace", NAMESPACE_RULES),
        cluster_role(f"{NAME}:ceilings", ceiling_rules),
        _binding("ClusterRoleBinding", NAME, role_kind="ClusterRole", role=NAME, account=operator_namespace, namespace=None),
        *namespaced_role(KEYS_ROLE, operator_namespace, OWN_NAMESPACE_RULES),
        *namespaced_role(EVENTS_ROLE, CLUSTER_EVENTS_NAMESPACE, CLUSTER_EVENTS_RULES),
    ]
    for namespace in served_namespaces:
        for role in (f"{NAME}:namespace", f"{NAME}:ceilings"):
            objects.append(
                _binding(
                    "RoleBinding",
                    role.replace(":", "-"),
                    role_kind="ClusterRole",
                    role=role,
                    account=operator_namespace,
                    namespace=namespace,
                )
            )
    return objects
