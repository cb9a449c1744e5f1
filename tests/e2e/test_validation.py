"""Bad input is refused by the API server itself (schema and CEL), with the field named."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes.client.rest import ApiException

from support.cluster import Cluster, make_identity
from support.operator_process import OperatorProcess

SCOPE = {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}


@pytest.mark.parametrize(
    ("changes", "field", "words"),
    [
        ({"ttl": "ten minutes"}, "spec.ttl", "ttl must be a duration such as 90s, 10m or 1h30m"),
        ({"ttl": "5s"}, "spec.ttl", "ttl must be between 10s and 24h"),
        ({"ttl": "25h"}, "spec.ttl", "ttl must be between 10s and 24h"),
        ({"task": None}, "spec.task", "Required value"),
        ({"task": ""}, "spec.task", "should be at least 1 chars long"),
        ({"scopes": []}, "spec.scopes", "should have at least 1 items"),
        (
            {"scopes": [{"apiGroups": [""], "resources": [], "verbs": ["get"]}]},
            "spec.scopes[0]",
            "each scope must name at least one resource",
        ),
        (
            {"scopes": [{"apiGroups": [""], "resources": ["pods"], "verbs": []}]},
            "spec.scopes[0]",
            "each scope must name at least one verb",
        ),
        ({"delegator": {"kind": "Group", "name": "x"}}, "spec.delegator.kind", "Unsupported value"),
        (
            {"delegator": {"kind": "ServiceAccount", "name": "ci"}},
            "spec.delegator",
            "a ServiceAccount delegator needs a namespace",
        ),
        ({"delegator": {"kind": "User", "name": "bob", "namespace": "x"}}, "spec.delegator", "a User delegator has no namespace"),
    ],
)
def test_invalid_specs_are_refused_naming_the_field(
    cluster: Cluster, namespace: str, changes: dict[str, Any], field: str, words: str
) -> None:
    with pytest.raises(ApiException) as refused:
        cluster.create_identity(make_identity("bad", namespace, **changes))
    assert refused.value.status == 422
    assert field in refused.value.body and words in refused.value.body, refused.value.body
    assert cluster.get_identity(namespace, "bad") is None


def test_without_a_ttl_or_a_profile_default_the_identity_is_denied(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    cluster.create_identity(make_identity("ageless", namespace, ttl=None))
    denied = cluster.wait_phase(namespace, "ageless", "Denied")
    ready = {c["type"]: c for c in denied["status"]["conditions"]}["Ready"]
    assert ready["message"] == "spec.ttl: required (no profile defaultTTL applies)"
    assert not any(cluster.children(namespace, "ageless").values())


def test_unknown_fields_such_as_non_resource_urls_are_refused(cluster: Cluster, namespace: str) -> None:
    manifest = make_identity("bad", namespace, scopes=[{**SCOPE, "nonResourceURLs": ["/metrics"]}])
    with pytest.raises(ApiException) as refused:
        cluster.custom.create_namespaced_custom_object(
            "agentidentity.dev", "v1alpha1", namespace, "agentidentities", manifest, field_validation="Strict"
        )
    assert refused.value.status == 400
    assert 'unknown field "spec.scopes[0].nonResourceURLs"' in json.loads(refused.value.body)["message"]


@pytest.mark.parametrize(
    ("patch", "field", "words"),
    [
        ({"spec": {"scopes": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]}}, "spec.scopes", "scopes are immutable"),
        ({"spec": {"ttl": "24h"}}, "spec.ttl", "ttl is immutable"),
        ({"spec": {"task": "something else"}}, "spec.task", "task is immutable"),
        ({"spec": {"delegator": {"kind": "User", "name": "mallory"}}}, "spec.delegator", "delegator is immutable"),
        ({"spec": {"profile": "unrestricted"}}, "spec.profile", "profile is immutable"),
    ],
)
def test_identity_defining_fields_are_immutable(
    cluster: Cluster, namespace: str, patch: dict[str, Any], field: str, words: str
) -> None:
    cluster.create_identity(make_identity("fixed", namespace))
    with pytest.raises(ApiException) as refused:
        cluster.patch_identity(namespace, "fixed", patch)
    assert refused.value.status == 422
    assert field in refused.value.body and words in refused.value.body, refused.value.body
    assert cluster.get_identity(namespace, "fixed")["spec"] == make_identity("fixed", namespace)["spec"]  # type: ignore[index]


def _rule(resources: int, verbs: int, **extra: Any) -> dict[str, Any]:
    return {
        "apiGroups": [""],
        "resources": [f"r{i}" for i in range(resources)],
        "verbs": [f"v{i}" for i in range(verbs)],
        **extra,
    }


CAP_MESSAGE = (
    'spec.scopes: Invalid value: "array": expands to more than 64 permissions (verbs x resources x apiGroups x'
    " resourceNames, summed over the scopes); at most 64 are allowed per identity: split the task or name fewer verbs/resources"
)


@pytest.mark.parametrize(
    "scopes",
    [
        [_rule(16, 16)],  # one rule of 16 x 16: 256 reviews the webhook would have to ask
        [_rule(8, 5), _rule(5, 8)],  # the cap is on the identity, not per rule: 40 + 40
        [_rule(4, 4, resourceNames=["a", "b", "c", "d"]), _rule(1, 1)],  # names multiply: 64 + 1
        [
            {
                "apiGroups": ["*"],
                "resources": ["*", "pods"],
                "verbs": ["*"] + [f"v{i}" for i in range(15)],
                "resourceNames": ["a", "b", "c"],
            }
        ],  # 1 x 2 x 16 x 3 = 96: each "*" counts once
    ],
    ids=["one-wide-rule", "total-across-rules", "names-multiply", "wildcards-count-once-each"],
)
def test_a_spec_expanding_beyond_the_permission_cap_is_refused(
    cluster: Cluster, namespace: str, scopes: list[dict[str, Any]]
) -> None:
    with pytest.raises(ApiException) as refused:
        cluster.create_identity(make_identity("wide", namespace, scopes=scopes))
    assert refused.value.status == 422
    message = json.loads(refused.value.body)["message"]
    assert CAP_MESSAGE in message, message
    assert cluster.get_identity(namespace, "wide") is None


@pytest.mark.parametrize(
    ("scopes", "field"),
    [
        ([_rule(1, 1)] * 17, "spec.scopes"),
        ([_rule(17, 1)], "spec.scopes[0].resources"),
        ([_rule(1, 17)], "spec.scopes[0].verbs"),
        ([{**_rule(1, 1), "apiGroups": [f"g{i}" for i in range(17)]}], "spec.scopes[0].apiGroups"),
        ([_rule(1, 1, resourceNames=[f"n{i}" for i in range(17)])], "spec.scopes[0].resourceNames"),
    ],
    ids=["scopes", "resources", "verbs", "apiGroups", "resourceNames"],
)
def test_each_list_of_a_scope_holds_at_most_16(cluster: Cluster, namespace: str, scopes: list[Any], field: str) -> None:
    with pytest.raises(ApiException) as refused:
        cluster.create_identity(make_identity("long", namespace, scopes=scopes))
    assert refused.value.status == 422
    message = json.loads(refused.value.body)["message"]
    assert f"{field}: Too many: 17: must have at most 16 items" in message, message


@pytest.mark.parametrize(
    "scopes",
    [
        [_rule(4, 4, resourceNames=["a", "b", "c"]), _rule(4, 4)],  # 48 + 16
        [_rule(8, 8)],  # 64 in one rule
        [_rule(1, 1)] * 16,  # 16 scopes of one permission each
        [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}],  # everything, yet one permission to review
    ],
    ids=["two-rules", "one-rule", "sixteen-scopes", "wildcards"],
)
def test_a_spec_at_the_permission_cap_is_accepted(cluster: Cluster, namespace: str, scopes: list[dict[str, Any]]) -> None:
    created = cluster.create_identity(make_identity("at-cap", namespace, scopes=scopes))
    assert created["spec"]["scopes"] == scopes
