"""Desired state: the children one AgentIdentity becomes, as plain Kubernetes dicts. Pure.

Every child carries the same labels (so clean-up selects by them and nothing else), the same
provenance annotations (so a ServiceAccount found on its own still says who delegated it, for
which task, until when) and an ownerReference to its AgentIdentity (so the garbage collector
removes whatever the operator misses).
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from agent_identity import API_VERSION, GROUP, KIND, PLURAL
from agent_identity.api.durations import format_timestamp
from agent_identity.api.v1alpha1 import AgentIdentity

MANAGED_BY = "agent-identity-operator"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_IDENTITY = f"{GROUP}/identity"
ANNOTATION_IDENTITY_UID = f"{GROUP}/identity-uid"
ANNOTATION_TASK = f"{GROUP}/task"
ANNOTATION_DELEGATOR = f"{GROUP}/delegator"
ANNOTATION_CHAIN = f"{GROUP}/delegation-chain"
ANNOTATION_EXPIRES_AT = f"{GROUP}/expires-at"
# On the ServiceAccount only: the deadline in Unix seconds, so a restarted operator finds the
# overdue with one filtered listing (``expires<now``, label selectors compare integers) before it
# has listed every identity. A hint for ordering: never enforced, never trusted for a decision
# (the reconcile judges the identity's own status), so drift ignores it (HINT_LABELS).
LABEL_EXPIRES = f"{GROUP}/expires"
HINT_LABELS = frozenset({LABEL_EXPIRES})
# On an agent workload's pod template, written by the workload webhook when it judged who asked:
# the uid of the AgentIdentity it was judged for (so a successor of the same name is not served).
ANNOTATION_JUDGED_FOR = f"{GROUP}/judged-for-uid"
ANNOTATION_CREATOR = f"{GROUP}/creator"  # on the AgentIdentity, stamped by the mutating webhook
ANNOTATION_SEAL = f"{GROUP}/creator-seal"  # its HMAC seal (see seal.py)
LABEL_PROFILE = f"{GROUP}/profile"
LABEL_RISK_LEVEL = f"{GROUP}/risk-level"
# On the token Secret only: facts about the token that must survive a crash between minting it
# and writing status. A digest, never the token, so drift in the Secret's data is detectable.
ANNOTATION_TOKEN_ISSUED_AT = f"{GROUP}/token-issued-at"
ANNOTATION_TOKEN_EXPIRES_AT = f"{GROUP}/token-expires-at"
ANNOTATION_TOKEN_SHA256 = f"{GROUP}/token-sha256"

SECRET_TYPE = f"{GROUP}/agent-token"
SELECTOR = f"{LABEL_MANAGED_BY}={MANAGED_BY}"


class ChildKind(StrEnum):
    """The children one AgentIdentity becomes, in the order they are made."""

    SERVICE_ACCOUNT = "ServiceAccount"
    ROLE = "Role"
    ROLE_BINDING = "RoleBinding"
    TOKEN_SECRET = "Secret"


@dataclass(frozen=True)
class Provenance:
    """Who, what and until when: stamped on every child and every audit line."""

    delegator: str
    task: str
    chain: tuple[str, ...]
    expires_at: datetime
    profile: str | None = None
    risk_level: str | None = None

    @property
    def labels(self) -> dict[str, str]:
        """The profile and risk level as labels, so fleets can be selected by them."""
        labels = {LABEL_PROFILE: self.profile} if self.profile else {}
        return labels | ({LABEL_RISK_LEVEL: self.risk_level} if self.risk_level else {})


def child_name(identity: AgentIdentity) -> str:
    """ServiceAccount, Role and RoleBinding share one name, prefixed so it never collides with a
    workload's own ServiceAccount of the same name."""
    return f"aid-{identity.metadata.name}"


def token_secret_name(identity: AgentIdentity) -> str:
    return f"{child_name(identity)}-token"


def owner_reference(*, api_version: str, kind: str, name: str, uid: str, controller: bool) -> dict[str, Any]:
    return {
        "apiVersion": api_version,
        "kind": kind,
        "name": name,
        "uid": uid,
        "controller": controller,
        "blockOwnerDeletion": False,
    }


def identity_owner_reference(identity: AgentIdentity) -> dict[str, Any]:
    return owner_reference(
        api_version=API_VERSION, kind=KIND, name=identity.metadata.name, uid=identity.metadata.uid, controller=True
    )


def _metadata(identity: AgentIdentity, provenance: Provenance, *, name: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": identity.metadata.namespace,
        "labels": {LABEL_MANAGED_BY: MANAGED_BY, LABEL_IDENTITY: identity.metadata.name} | provenance.labels,
        "annotations": {
            ANNOTATION_IDENTITY_UID: identity.metadata.uid,
            ANNOTATION_DELEGATOR: provenance.delegator,
            ANNOTATION_TASK: provenance.task,
            ANNOTATION_CHAIN: json.dumps(list(provenance.chain)),
            ANNOTATION_EXPIRES_AT: format_timestamp(provenance.expires_at),
        },
        "ownerReferences": [identity_owner_reference(identity)],
    }


def service_account(identity: AgentIdentity, provenance: Provenance) -> dict[str, Any]:
    metadata = _metadata(identity, provenance, name=child_name(identity))
    metadata["labels"][LABEL_EXPIRES] = str(int(provenance.expires_at.timestamp()))
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": metadata,
        # The agent's credential is the bound token in its Secret; nothing is mounted implicitly.
        "automountServiceAccountToken": False,
    }


def self_retire_rule(identity: AgentIdentity) -> dict[str, Any]:
    """The one right every agent gets besides its scopes: ``patch`` on its own AgentIdentity,
    by name, so that it can set spec.done (``kubectl agent done``). Patch, not update (an update
    must send the whole object, which the agent cannot read: no get), not delete (a deletion
    removes the record whose status says why it ended). The webhook refuses any other change
    the agent's patch asks for."""
    return {"apiGroups": [GROUP], "resources": [PLURAL], "verbs": ["patch"], "resourceNames": [identity.metadata.name]}


COORDINATION = "coordination.k8s.io"


def heartbeat_lease_name(identity_name: str) -> str:
    """The heartbeat Lease of the identity ``identity_name`` with spec.heartbeat (see plan.heartbeat)."""
    return f"aid-{identity_name}-heartbeat"


def lease_name(identity: AgentIdentity) -> str:
    return heartbeat_lease_name(identity.metadata.name)


def heartbeat_rule(identity: AgentIdentity) -> dict[str, Any]:
    """What the agent's Role grants for its heartbeat: renewing its own Lease, by name, nothing else."""
    return {
        "apiGroups": [COORDINATION],
        "resources": ["leases"],
        "verbs": ["get", "update", "patch"],
        "resourceNames": [lease_name(identity)],
    }


def role(identity: AgentIdentity, provenance: Provenance) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": _metadata(identity, provenance, name=child_name(identity)),
        "rules": [rule.model_dump(by_alias=True, exclude_none=True) for rule in identity.spec.scopes]
        + [self_retire_rule(identity)]
        + ([heartbeat_rule(identity)] if identity.spec.heartbeat else []),
    }


def role_binding(identity: AgentIdentity, provenance: Provenance) -> dict[str, Any]:
    name = child_name(identity)
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": _metadata(identity, provenance, name=name),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": identity.metadata.namespace}],
    }


def token_secret(identity: AgentIdentity, provenance: Provenance) -> dict[str, Any]:
    """The Secret exists before its token: TokenRequest binds the token to the Secret's uid."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _metadata(identity, provenance, name=token_secret_name(identity)),
        "type": SECRET_TYPE,
    }


@dataclass(frozen=True)
class IssuedToken:
    token: str
    issued_at: datetime
    expires_at: datetime

    def __repr__(self) -> str:  # a token never reaches a log line, even through repr()
        return f"IssuedToken(issued_at={self.issued_at!r}, expires_at={self.expires_at!r})"


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def token_request(*, audiences: list[str], expiration_seconds: int, secret_name: str, secret_uid: str) -> dict[str, Any]:
    return {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {
            "audiences": audiences,
            "expirationSeconds": expiration_seconds,
            "boundObjectRef": {"apiVersion": "v1", "kind": "Secret", "name": secret_name, "uid": secret_uid},
        },
    }


def kubeconfig(*, server: str, ca_cert: str, namespace: str, user: str, token: str) -> str:
    """A kubeconfig that uses exactly this token, in the identity's namespace."""
    cluster = "agent-identity"
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": cluster, "cluster": {"server": server, "certificate-authority-data": _b64(ca_cert)}}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": user, "context": {"cluster": cluster, "user": user, "namespace": namespace}}],
        "current-context": user,
    }
    return json.dumps(document, indent=2)  # JSON is YAML, and ten times cheaper to write


def token_secret_data(
    *, identity: AgentIdentity, issued: IssuedToken, server: str, ca_cert: str, assertion: str | None = None
) -> dict[str, str]:
    """The Secret's data: the token, what an agent needs to use it, and its signed delegation
    assertion for services outside Kubernetes (when the operator signs them)."""
    namespace = identity.metadata.namespace
    return ({"assertion": assertion} if assertion else {}) | {
        "token": issued.token,
        "ca.crt": ca_cert,
        "namespace": namespace,
        "kubeconfig": kubeconfig(
            server=server, ca_cert=ca_cert, namespace=namespace, user=child_name(identity), token=issued.token
        ),
    }


def token_annotations(issued: IssuedToken) -> dict[str, str]:
    return {
        ANNOTATION_TOKEN_ISSUED_AT: format_timestamp(issued.issued_at),
        ANNOTATION_TOKEN_EXPIRES_AT: format_timestamp(issued.expires_at),
        ANNOTATION_TOKEN_SHA256: token_digest(issued.token),
    }


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()
