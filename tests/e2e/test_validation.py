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
