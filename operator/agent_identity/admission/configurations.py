"""The webhook configurations, as data: the operator registers them on loopback
(``local.controlplane``), the Helm chart renders the same (tests/chart/test_chart.py compares).

Four webhooks, all ``failurePolicy: Fail`` with a short timeout, the operator's own namespace
excluded so a broken operator can always be repaired:

- AgentIdentities: mutating (judge, stamp and seal the creator) and validating (the seal holds);
- agent pods, mutating: only pods labelled ``agentidentity.dev/identity`` (``objectSelector``),
  created or given an ephemeral container;
- workloads that make agent pods, mutating (judge, and record which identity was judged on the
  pod template): only those labelled themselves.

Every other pod and workload never reaches the operator, so an outage of it blocks none of them.
"""

from __future__ import annotations

import base64
from typing import Any

from agent_identity import GROUP, PLURAL, VERSION
from agent_identity.admission.identity import MUTATE_PATH, VALIDATE_PATH
from agent_identity.admission.pods import POD_PATH, WORKLOAD_PATH
from agent_identity.plan.children import LABEL_IDENTITY
from agent_identity.plan.pods import WORKLOAD_PLURALS

CONFIGURATION_NAME = "agent-identity-operator"
TIMEOUT_SECONDS = 5
_LABELLED = {"matchExpressions": [{"key": LABEL_IDENTITY, "operator": "Exists"}]}


def _rule(api_version: str, resources: list[str], operations: list[str]) -> dict[str, Any]:
    group, _, version = api_version.rpartition("/")
    return {
        "apiGroups": [group],
        "apiVersions": [version],
        "resources": resources,
        "operations": operations,
        "scope": "Namespaced",
    }


def workload_rules() -> list[dict[str, Any]]:
    by_version: dict[str, list[str]] = {}
    for (api_version, _), plural in WORKLOAD_PLURALS.items():
        by_version.setdefault(api_version, []).append(plural)
    return [_rule(api_version, plurals, ["CREATE", "UPDATE"]) for api_version, plurals in by_version.items()]


def webhook_configurations(
    *, ca_bundle: bytes, url: str | None = None, service: dict[str, Any] | None = None, exclude_namespace: str | None = None
) -> list[dict[str, Any]]:
    """The Mutating- and ValidatingWebhookConfiguration, pointing at ``url`` (the operator on
    loopback) or ``service`` (in a cluster)."""

    def client_config(path: str) -> dict[str, Any]:
        config: dict[str, Any] = {"caBundle": base64.b64encode(ca_bundle).decode()}
        if url:
            config["url"] = f"{url.rstrip('/')}/{path}"
        elif service:
            config["service"] = {**service, "path": f"/{path}"}
        return config

    def webhook(name: str, path: str, rules: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "name": name,
            "clientConfig": client_config(path),
            "rules": rules,
            "failurePolicy": "Fail",
            "sideEffects": "None",
            "timeoutSeconds": TIMEOUT_SECONDS,
            "admissionReviewVersions": ["v1"],
            "matchPolicy": "Equivalent",
            **extra,
        }
        if exclude_namespace:
            entry["namespaceSelector"] = {
                "matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": [exclude_namespace]}]
            }
        return entry

    identities = [_rule(f"{GROUP}/{VERSION}", [PLURAL], ["CREATE", "UPDATE"])]
    return [
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": CONFIGURATION_NAME},
            "webhooks": [
                webhook(f"mutate.{PLURAL}.{GROUP}", MUTATE_PATH, identities, reinvocationPolicy="Never"),
                # IfNeeded: a container another webhook adds after ours gets the token mount too.
                webhook(
                    f"mutate.pods.{GROUP}",
                    POD_PATH,
                    [_rule("v1", ["pods"], ["CREATE"]), _rule("v1", ["pods/ephemeralcontainers"], ["UPDATE"])],
                    objectSelector=_LABELLED,
                    reinvocationPolicy="IfNeeded",
                ),
                webhook(
                    f"mutate.workloads.{GROUP}",
                    WORKLOAD_PATH,
                    workload_rules(),
                    objectSelector=_LABELLED,
                    reinvocationPolicy="Never",
                ),
            ],
        },
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": CONFIGURATION_NAME},
            "webhooks": [
                webhook(f"validate.{PLURAL}.{GROUP}", VALIDATE_PATH, identities),
            ],
        },
    ]
