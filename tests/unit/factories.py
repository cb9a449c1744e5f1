"""Object builders for unit tests: ``identity(**changes)`` instead of YAML copied around."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from agent_identity.api.v1alpha1 import AgentIdentity

CREATED = datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC)


def identity_body(
    name: str = "crawler",
    *,
    namespace: str = "support",
    uid: str = "uid-crawler",
    created: datetime = CREATED,
    status: dict[str, Any] | None = None,
    **spec_changes: Any,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "task": "collect incident notes",
        "ttl": "90s",
        "delegator": {"kind": "User", "name": "alice"},
        "scopes": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}],
    }
    for key, value in spec_changes.items():
        if value is None:
            spec.pop(key, None)
        else:
            spec[key] = value
    return {
        "apiVersion": "agentidentity.dev/v1alpha1",
        "kind": "AgentIdentity",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": uid,
            "generation": 1,
            "resourceVersion": "100",
            "creationTimestamp": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
        },
        "spec": spec,
        "status": status or {},
    }


def identity(name: str = "crawler", **changes: Any) -> AgentIdentity:
    return AgentIdentity.from_body(identity_body(name, **changes))
