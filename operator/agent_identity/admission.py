"""What the admission webhooks decide. The kopf handlers in ``main`` are one line each; this
module stamps the creator (mutating) and runs the policy chain (validating), with the facts
gathered exactly as the reconciler gathers them. Also builds the webhook configurations.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from . import GROUP, PLURAL, VERSION
from .api import AgentIdentity
from .builders import ANNOTATION_CREATOR, LABEL_PROFILE, LABEL_RISK_LEVEL
from .facts import gather, load_profile
from .kube import Kube
from .plan import parse_identity
from .policy import Creator, Violation, evaluate, unchanged_on_update

MUTATE_PATH = "mutate-identity"
VALIDATE_PATH = "validate-identity"
CONFIGURATION_NAME = "agent-identity-operator"
TIMEOUT_SECONDS = 5


def creator_from_userinfo(userinfo: Mapping[str, Any]) -> Creator:
    return Creator(
        username=str(userinfo.get("username", "")),
        uid=str(userinfo.get("uid", "")),
        groups=tuple(userinfo.get("groups") or ()),
        extra={key: tuple(values) for key, values in (userinfo.get("extra") or {}).items()},
    )


@dataclass(frozen=True)
class Stamp:
    """What the mutating webhook writes: a ``None`` value removes the key."""

    annotations: dict[str, str | None]
    labels: dict[str, str | None]
    profile: str | None  # set spec.profile to this (the configured default) when absent


def stamp(
    *,
    operation: str,
    body: Mapping[str, Any],
    old: Mapping[str, Any] | None,
    userinfo: Mapping[str, Any],
    default_profile: str | None,
    profile_risk: str | None,
) -> Stamp:
    """The creator comes from the request's userInfo, never from the client: on create it is
    written, on update it is put back to what create wrote (or removed if there was none)."""
    if operation == "CREATE":
        profile = (body.get("spec") or {}).get("profile") or default_profile
        labels: dict[str, str | None] = {LABEL_PROFILE: profile, LABEL_RISK_LEVEL: profile_risk} if profile else {}
        return Stamp(
            annotations={ANNOTATION_CREATOR: creator_from_userinfo(userinfo).to_annotation()},
            labels={key: value for key, value in labels.items() if value},
            profile=default_profile if not (body.get("spec") or {}).get("profile") else None,
        )
    previous = old or {}
    old_annotations = (previous.get("metadata") or {}).get("annotations") or {}
    old_labels = (previous.get("metadata") or {}).get("labels") or {}
    return Stamp(
        annotations={ANNOTATION_CREATOR: old_annotations.get(ANNOTATION_CREATOR)},
        labels={key: old_labels.get(key) for key in (LABEL_PROFILE, LABEL_RISK_LEVEL)},
        profile=None,
    )


def review(
    kube: Kube,
    *,
    operation: str,
    body: Mapping[str, Any],
    old: Mapping[str, Any] | None,
    userinfo: Mapping[str, Any],
    default_profile: str | None,
    now: datetime,
) -> list[Violation]:
    """Every policy violation of this request (empty: admit)."""
    identity = parse_identity(dict(body))
    if isinstance(identity, str):
        return [Violation("schema", identity)]
    if operation == "UPDATE":
        previous = parse_identity(dict(old or {}))
        if isinstance(previous, AgentIdentity):
            unchanged = unchanged_on_update(previous.spec, identity.spec)
            return [unchanged] if unchanged else []
        return []
    profile = load_profile(kube.get_profile, identity.spec.profile or default_profile)
    delegator = None
    if (
        identity.spec.delegator
        and identity.spec.delegator.kind == "AgentIdentity"
        and identity.spec.delegator.namespace
        in (
            None,
            identity.metadata.namespace,
        )
    ):
        parent = kube.get_identity(identity.metadata.namespace, identity.spec.delegator.name)
        parsed = parse_identity(parent) if parent else None
        delegator = parsed if isinstance(parsed, AgentIdentity) else None
    facts = gather(
        kube,
        identity,
        profile=profile,
        delegator=delegator,
        creator=creator_from_userinfo(userinfo),
        require_creator=True,
        created_at=now,
    )
    return evaluate(facts)


def denial_message(violations: list[Violation]) -> str:
    return "AgentIdentity refused: " + "; ".join(str(v) for v in violations)


# -- configurations ------------------------------------------------------------------------------


def webhook_configurations(
    *, ca_bundle: bytes, url: str | None = None, service: dict[str, Any] | None = None, exclude_namespace: str | None = None
) -> list[dict[str, Any]]:
    """The Mutating- and ValidatingWebhookConfiguration, pointing at ``url`` (the operator on
    loopback) or ``service`` (in a cluster): failurePolicy Fail, a short timeout, and the
    operator's own namespace excluded so a broken operator can always be repaired."""

    def client_config(path: str) -> dict[str, Any]:
        config: dict[str, Any] = {"caBundle": base64.b64encode(ca_bundle).decode()}
        if url:
            config["url"] = f"{url.rstrip('/')}/{path}"
        elif service:
            config["service"] = {**service, "path": f"/{path}"}
        return config

    def webhook(kind: str, path: str, operations: list[str]) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "name": f"{kind}.{PLURAL}.{GROUP}",
            "clientConfig": client_config(path),
            "rules": [
                {
                    "apiGroups": [GROUP],
                    "apiVersions": [VERSION],
                    "resources": [PLURAL],
                    "operations": operations,
                    "scope": "Namespaced",
                }
            ],
            "failurePolicy": "Fail",
            "sideEffects": "None",
            "timeoutSeconds": TIMEOUT_SECONDS,
            "admissionReviewVersions": ["v1"],
            "matchPolicy": "Equivalent",
        }
        if exclude_namespace:
            entry["namespaceSelector"] = {
                "matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": [exclude_namespace]}]
            }
        return entry

    return [
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": CONFIGURATION_NAME},
            "webhooks": [{**webhook("mutate", MUTATE_PATH, ["CREATE", "UPDATE"]), "reinvocationPolicy": "Never"}],
        },
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": CONFIGURATION_NAME},
            "webhooks": [webhook("validate", VALIDATE_PATH, ["CREATE", "UPDATE"])],
        },
    ]
