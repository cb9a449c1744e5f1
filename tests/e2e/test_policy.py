"""Least privilege on a real API server, with the webhooks really called by it.

A user with limited RBAC ("mallory", reached through impersonation) tries to hand an agent more
than she holds, more than its profile allows, or more than its delegator holds. Each attempt is
refused by the validating webhook with the offending rule named; and with the webhook
configuration removed, the reconciler denies the same attempt and provisions nothing.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client.rest import ApiException

from support.cluster import GROUP, PLURAL, VERSION, Cluster, impersonating, make_identity
from support.operator_process import OperatorProcess
from support.webhooks import operator_with_webhooks, register_again, unregister

USER = "mallory"
CREATOR_ANNOTATION = "agentidentity.dev/creator"
CM_GET = {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}


def rule(groups: list[str], resources: list[str], verbs: list[str], names: list[str] | None = None) -> dict[str, Any]:
    return {"apiGroups": groups, "resources": resources, "verbs": verbs, **({"resourceNames": names} if names else {})}


class World:
    """The test's namespaces, profiles and mallory's RBAC."""

    def __init__(self, cluster: Cluster, namespace: str, other: str, suffix: str) -> None:
        self.cluster, self.namespace, self.other, self.suffix = cluster, namespace, other, suffix

    def profile(self, kind: str) -> str:
        return f"{kind}-{self.suffix}"


def _profiles(world: World) -> list[dict[str, Any]]:
    everything = [rule(["*"], ["*"], ["*"])]
    return [
        {
            "riskLevel": "high",
            "maxTTL": "1h",
            "maxDelegationDepth": 1,
            "permissionCeiling": everything,
            "audiences": ["vault.example"],
            "namespaces": [world.namespace, world.other],
            "name": "broad",
        },
        {
            "riskLevel": "low",
            "maxTTL": "5m",
            "maxDelegationDepth": 0,
            "requireDelegator": True,
            "permissionCeiling": [rule([""], ["configmaps"], ["get", "list"])],
            "name": "narrow",
        },
        {
            "riskLevel": "medium",
            "maxTTL": "1h",
            "permissionCeiling": everything,
            "namespaces": ["elsewhere"],
            "name": "elsewhere",
        },
    ]


@pytest.fixture(scope="module")
def world(cluster: Cluster) -> Iterator[World]:
    suffix = uuid.uuid4().hex[:5]
    namespace, other = cluster.create_test_namespace(f"policy-{suffix}"), cluster.create_test_namespace(f"other-{suffix}")
    current = World(cluster, namespace, other, suffix)
    custom, rbac = cluster.custom, cluster.rbac
    for profile in _profiles(current):
        name = current.profile(profile.pop("name"))
        custom.create_cluster_custom_object(
            GROUP,
            VERSION,
            "agentprofiles",
            {"apiVersion": f"{GROUP}/{VERSION}", "kind": "AgentProfile", "metadata": {"name": name}, "spec": profile},
        )
    grants = {
        namespace: [
            rule([GROUP], [PLURAL], ["create", "get", "list", "update", "patch", "delete"]),
            rule([""], ["configmaps"], ["get", "list", "watch"]),
            rule([""], ["pods"], ["get", "list"]),
            rule([""], ["secrets"], ["get"], ["public"]),
        ],
        other: [rule([GROUP], [PLURAL], ["create", "get"])],
    }
    for ns, rules in grants.items():
        rbac.create_namespaced_role(ns, {"metadata": {"name": USER}, "rules": rules})
        rbac.create_namespaced_role_binding(
            ns,
            {
                "metadata": {"name": USER},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": USER},
                "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": USER}],
            },
        )
    yield current
    for profile in _profiles(current):
        custom.delete_cluster_custom_object(GROUP, VERSION, "agentprofiles", current.profile(profile["name"]))
    for ns in (namespace, other):
        cluster.delete_namespace(ns)


@pytest.fixture(scope="module")
def webhook_operator(cluster: Cluster, world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    log_dir = tmp_path_factory.mktemp("policy-operator")
    with operator_with_webhooks(cluster, world.namespace, log_dir) as process:
        yield process


# (id, profile, namespace is "other", spec changes, the rule that must refuse it)
ESCALATIONS: list[tuple[str, str, bool, dict[str, Any], str]] = [
    ("verbs-wildcard", "broad", False, {"scopes": [rule([""], ["configmaps"], ["*"])]}, "creator-holds-scopes"),
    ("resources-wildcard", "broad", False, {"scopes": [rule([""], ["*"], ["get"])]}, "creator-holds-scopes"),
    ("groups-wildcard", "broad", False, {"scopes": [rule(["*"], ["configmaps"], ["get"])]}, "creator-holds-scopes"),
    ("all-wildcards", "broad", False, {"scopes": [rule(["*"], ["*"], ["*"])]}, "creator-holds-scopes"),
    ("secrets-list", "broad", False, {"scopes": [rule([""], ["secrets"], ["list"])]}, "creator-holds-scopes"),
    ("secrets-any-name", "broad", False, {"scopes": [rule([""], ["secrets"], ["get"])]}, "creator-holds-scopes"),
    ("secrets-other-name", "broad", False, {"scopes": [rule([""], ["secrets"], ["get"], ["private"])]}, "creator-holds-scopes"),
    ("pods-exec", "broad", False, {"scopes": [rule([""], ["pods/exec"], ["create", "get"])]}, "creator-holds-scopes"),
    ("pods-attach", "broad", False, {"scopes": [rule([""], ["pods/attach"], ["create"])]}, "creator-holds-scopes"),
    ("pods-log", "broad", False, {"scopes": [rule([""], ["pods/log"], ["get"])]}, "creator-holds-scopes"),
    ("sa-token", "broad", False, {"scopes": [rule([""], ["serviceaccounts/token"], ["create"])]}, "creator-holds-scopes"),
    (
        "roles-escalate",
        "broad",
        False,
        {"scopes": [rule(["rbac.authorization.k8s.io"], ["roles"], ["escalate"])]},
        "creator-holds-scopes",
    ),
    (
        "roles-bind",
        "broad",
        False,
        {"scopes": [rule(["rbac.authorization.k8s.io"], ["roles"], ["bind"])]},
        "creator-holds-scopes",
    ),
    (
        "impersonate",
        "broad",
        False,
        {"scopes": [rule([""], ["users", "serviceaccounts"], ["impersonate"])]},
        "creator-holds-scopes",
    ),
    ("configmaps-update", "broad", False, {"scopes": [rule([""], ["configmaps"], ["update"])]}, "creator-holds-scopes"),
    ("configmaps-delete", "broad", False, {"scopes": [rule([""], ["configmaps"], ["delete"])]}, "creator-holds-scopes"),
    ("deployments", "broad", False, {"scopes": [rule(["apps"], ["deployments"], ["get"])]}, "creator-holds-scopes"),
    ("nodes", "broad", False, {"scopes": [rule([""], ["nodes"], ["get"])]}, "creator-holds-scopes"),
    ("namespaces", "broad", False, {"scopes": [rule([""], ["namespaces"], ["get"])]}, "creator-holds-scopes"),
    ("persistentvolumes", "broad", False, {"scopes": [rule([""], ["persistentvolumes"], ["list"])]}, "creator-holds-scopes"),
    (
        "clusterroles",
        "broad",
        False,
        {"scopes": [rule(["rbac.authorization.k8s.io"], ["clusterroles"], ["create"])]},
        "creator-holds-scopes",
    ),
    (
        "webhook-configs",
        "broad",
        False,
        {"scopes": [rule(["admissionregistration.k8s.io"], ["validatingwebhookconfigurations"], ["update"])]},
        "creator-holds-scopes",
    ),
    ("other-namespace", "broad", True, {"scopes": [CM_GET]}, "creator-holds-scopes"),
    ("delegator-not-creator", "broad", False, {"delegator": {"kind": "User", "name": "bob"}}, "delegator-is-creator"),
    (
        "sa-delegator-not-creator",
        "broad",
        False,
        {"delegator": {"kind": "ServiceAccount", "name": "ci", "namespace": "kube-system"}},
        "delegator-is-creator",
    ),
    ("audience-not-allowed", "broad", False, {"token": {"audiences": ["evil.example"]}}, "audiences-allowed"),
    ("ceiling-exceeded", "narrow", False, {"scopes": [rule([""], ["pods"], ["get"])]}, "scopes-within-ceiling"),
    ("ceiling-verb-exceeded", "narrow", False, {"scopes": [rule([""], ["configmaps"], ["watch"])]}, "scopes-within-ceiling"),
    ("ttl-over-profile", "narrow", False, {"ttl": "10m"}, "ttl-within-profile"),
    ("no-delegator", "narrow", False, {"delegator": None}, "delegator-required"),
    ("profile-missing", "missing", False, {}, "profile-exists"),
    ("namespace-not-allowed", "elsewhere", False, {}, "namespace-allowed"),
]


def attempt(world: World, case: tuple[str, str, bool, dict[str, Any], str], *, name: str) -> dict[str, Any]:
    _, profile, other, changes, _ = case
    spec: dict[str, Any] = {
        "profile": world.profile(profile),
        "ttl": "2m",
        "delegator": {"kind": "User", "name": USER},
        "scopes": [CM_GET],
    }
    spec.update(changes)
    return make_identity(name, world.other if other else world.namespace, **spec)


@pytest.mark.parametrize("case", ESCALATIONS, ids=[case[0] for case in ESCALATIONS])
def test_the_webhook_refuses_each_escalation_naming_the_rule(
    cluster: Cluster, world: World, webhook_operator: OperatorProcess, case: tuple[str, str, bool, dict[str, Any], str]
) -> None:
    manifest = attempt(world, case, name=f"esc-{case[0]}")
    namespace = manifest["metadata"]["namespace"]
    with pytest.raises(ApiException) as refused:
        impersonating(cluster, USER).create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, manifest)
    message = json.loads(refused.value.body)["message"]
    assert refused.value.status == 403, message
    assert "AgentIdentity refused" in message and f"{case[4]}:" in message, message
    assert cluster.get_identity(namespace, manifest["metadata"]["name"]) is None


def test_legitimate_narrowing_is_accepted_through_a_three_level_chain(
    cluster: Cluster, world: World, webhook_operator: OperatorProcess
) -> None:
    as_user = impersonating(cluster, USER)
    broad = world.profile("broad")
    wide = [rule([""], ["configmaps"], ["get", "list"]), rule([""], ["pods"], ["get"])]
    levels = [
        make_identity("lead", world.namespace, profile=broad, ttl="10m", delegator={"kind": "User", "name": USER}, scopes=wide),
        make_identity(
            "helper",
            world.namespace,
            profile=broad,
            ttl="5m",
            delegator={"kind": "AgentIdentity", "name": "lead"},
            scopes=[rule([""], ["configmaps"], ["get", "list"])],
        ),
    ]
    for manifest in levels:
        as_user.create_namespaced_custom_object(GROUP, VERSION, world.namespace, PLURAL, manifest)
        cluster.wait_phase(world.namespace, manifest["metadata"]["name"], "Ready")
    lead = cluster.get_identity(world.namespace, "lead")
    assert lead is not None
    assert lead["status"]["profile"] == broad and lead["status"]["riskLevel"] == "high"
    assert lead["metadata"]["labels"]["agentidentity.dev/profile"] == broad
    assert lead["metadata"]["labels"]["agentidentity.dev/risk-level"] == "high"
    sa = cluster.core.read_namespaced_service_account("aid-lead", world.namespace)
    assert sa.metadata.labels["agentidentity.dev/risk-level"] == "high"
    # depth 2 exceeds the profile's maxDelegationDepth 1
    too_deep = make_identity(
        "deep", world.namespace, profile=broad, ttl="1m", delegator={"kind": "AgentIdentity", "name": "helper"}, scopes=[CM_GET]
    )
    with pytest.raises(ApiException) as refused:
        as_user.create_namespaced_custom_object(GROUP, VERSION, world.namespace, PLURAL, too_deep)
    assert "delegation-depth:" in json.loads(refused.value.body)["message"]
    # and a narrower grandchild at depth 1 is fine
    sibling = make_identity(
        "sibling", world.namespace, profile=broad, ttl="1m", delegator={"kind": "AgentIdentity", "name": "lead"}, scopes=[CM_GET]
    )
    as_user.create_namespaced_custom_object(GROUP, VERSION, world.namespace, PLURAL, sibling)
    chain = cluster.wait_phase(world.namespace, "sibling", "Ready")["status"]["delegationChain"]
    assert chain == [f"user:{USER}", f"agent:{world.namespace}/lead"]


@pytest.mark.parametrize(
    ("changes", "rule_name"),
    [
        ({"scopes": [rule([""], ["configmaps"], ["get", "list", "watch"])]}, "delegate-within-delegator"),
        ({"scopes": [rule([""], ["pods"], ["get"])]}, "delegate-within-delegator"),
        ({"ttl": "30m"}, "delegate-not-outliving"),
    ],
    ids=["more-verbs-than-delegator", "other-resource-than-delegator", "outlives-delegator"],
)
def test_a_delegate_asking_for_more_than_its_delegator_is_refused(
    cluster: Cluster, world: World, webhook_operator: OperatorProcess, changes: dict[str, Any], rule_name: str
) -> None:
    as_user = impersonating(cluster, USER)
    parent = f"parent-{uuid.uuid4().hex[:4]}"
    as_user.create_namespaced_custom_object(
        GROUP,
        VERSION,
        world.namespace,
        PLURAL,
        make_identity(
            parent,
            world.namespace,
            profile=world.profile("broad"),
            ttl="10m",
            delegator={"kind": "User", "name": USER},
            scopes=[rule([""], ["configmaps"], ["get", "list"])],
        ),
    )
    cluster.wait_phase(world.namespace, parent, "Ready")
    child = make_identity(
        f"child-{parent}",
        world.namespace,
        profile=world.profile("broad"),
        ttl="1m",
        delegator={"kind": "AgentIdentity", "name": parent},
        scopes=[CM_GET],
    )
    child["spec"].update(changes)
    with pytest.raises(ApiException) as refused:
        as_user.create_namespaced_custom_object(GROUP, VERSION, world.namespace, PLURAL, child)
    assert f"{rule_name}:" in json.loads(refused.value.body)["message"]


def test_a_forged_creator_never_sticks(cluster: Cluster, world: World, webhook_operator: OperatorProcess) -> None:
    as_user = impersonating(cluster, USER)
    manifest = make_identity(
        "forger",
        world.namespace,
        profile=world.profile("broad"),
        ttl="2m",
        delegator={"kind": "User", "name": USER},
        scopes=[CM_GET],
    )
    manifest["metadata"]["annotations"] = {CREATOR_ANNOTATION: json.dumps({"username": "admin", "groups": ["system:masters"]})}
    created = as_user.create_namespaced_custom_object(GROUP, VERSION, world.namespace, PLURAL, manifest)
    stamped = json.loads(created["metadata"]["annotations"][CREATOR_ANNOTATION])
    assert stamped["username"] == USER and "system:masters" not in stamped["groups"]
    forged = {"metadata": {"annotations": {CREATOR_ANNOTATION: json.dumps({"username": "admin"})}}}
    updated = as_user.patch_namespaced_custom_object(GROUP, VERSION, world.namespace, PLURAL, "forger", forged)
    assert json.loads(updated["metadata"]["annotations"][CREATOR_ANNOTATION])["username"] == USER
    removed = as_user.patch_namespaced_custom_object(
        GROUP, VERSION, world.namespace, PLURAL, "forger", {"metadata": {"annotations": {CREATOR_ANNOTATION: None}}}
    )
    assert json.loads(removed["metadata"]["annotations"][CREATOR_ANNOTATION])["username"] == USER


def test_without_the_webhook_the_reconciler_denies_and_provisions_nothing(
    cluster: Cluster, world: World, webhook_operator: OperatorProcess, tmp_path: Path
) -> None:
    unregister(cluster)
    try:
        as_user = impersonating(cluster, USER)
        creator = json.dumps({"username": USER, "groups": ["system:authenticated"]})
        names = []
        for case in ESCALATIONS:
            manifest = attempt(world, case, name=f"nowh-{case[0]}")
            if case[2]:
                continue  # the operator serves one namespace; the webhook test covers the other
            manifest["metadata"]["annotations"] = {CREATOR_ANNOTATION: creator}
            as_user.create_namespaced_custom_object(GROUP, VERSION, world.namespace, PLURAL, manifest)
            names.append((manifest["metadata"]["name"], case[4]))
        unstamped = attempt(world, ("unstamped", "broad", False, {}, "creator-known"), name="nowh-unstamped")
        as_user.create_namespaced_custom_object(GROUP, VERSION, world.namespace, PLURAL, unstamped)
        names.append(("nowh-unstamped", "creator-known"))
        for name, rule_name in names:
            denied = cluster.wait_phase(world.namespace, name, "Denied", timeout=30)
            ready = {c["type"]: c for c in denied["status"]["conditions"]}["Ready"]
            # The client-written creator is vouched for by no seal: refused, with every rule the
            # spec breaks on its own named too (rules that need a creator's access cannot be judged).
            assert ready["reason"] == "PolicyViolation" and ready["message"].startswith("creator-sealed:"), (name, ready)
            if rule_name not in ("creator-holds-scopes", "delegator-is-creator", "creator-known"):
                assert f"{rule_name}:" in ready["message"], (name, ready["message"])
            assert not any(cluster.children(world.namespace, name).values()), name
    finally:
        register_again(cluster, webhook_operator)
