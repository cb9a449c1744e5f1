"""An in-memory stand-in for the request layer (``kube.Kube``), for millisecond unit tests of the
reconciler's paths: 409 on create, uid preconditions on delete, resourceVersions on replace. It
mimics only what the reconciler relies on; the real API server stays the judge in tests/e2e."""

from __future__ import annotations

import base64
import copy
import itertools
from datetime import datetime, timedelta
from typing import Any

from agent_identity.kube.client import ClusterAccess, KubeError, OwnWrites
from agent_identity.plan.children import ChildKind, IssuedToken

Key = tuple[str, str, str]  # (kind, namespace, name)


class FakeKube:
    def __init__(self) -> None:
        self.objects: dict[Key, dict[str, Any]] = {}
        self.identities: dict[tuple[str, str], dict[str, Any]] = {}
        self.requests: list[tuple[str, str]] = []  # (verb, what), in order
        self.events: list[str] = []
        self.own_writes = OwnWrites()
        self.on_identity_written: Any = lambda body: None
        self._versions = itertools.count(100)
        self._uids = itertools.count(1)

    # -- helpers for tests ------------------------------------------------------------------------

    def put(self, kind: ChildKind, body: dict[str, Any]) -> dict[str, Any]:
        """Stores an object as someone else would have created it."""
        stored = copy.deepcopy(body)
        metadata = stored["metadata"]
        metadata.setdefault("uid", f"uid-{next(self._uids)}")
        metadata["resourceVersion"] = str(next(self._versions))
        self.objects[(str(kind), metadata["namespace"], metadata["name"])] = stored
        return copy.deepcopy(stored)

    def child(self, kind: ChildKind, namespace: str, name: str) -> dict[str, Any] | None:
        return self.objects.get((str(kind), namespace, name))

    def _error(self, verb: str, what: str, status: int, reason: str) -> KubeError:
        return KubeError(method=verb, path=what, status=status, reason=reason, message=reason)

    # -- the Kube surface the reconciler uses --------------------------------------------------------

    def cluster_access(self, *, server_override: str | None = None) -> ClusterAccess:
        return ClusterAccess(server=server_override or "https://127.0.0.1:6443", ca_cert="CA")

    def get_child(self, kind: ChildKind, namespace: str, name: str) -> dict[str, Any] | None:
        self.requests.append(("GET", f"{kind}/{name}"))
        found = self.child(kind, namespace, name)
        return copy.deepcopy(found) if found else None

    def create_child(self, kind: ChildKind, body: dict[str, Any]) -> dict[str, Any]:
        self.requests.append(("POST", f"{kind}/{body['metadata']['name']}"))
        if self.child(kind, body["metadata"]["namespace"], body["metadata"]["name"]) is not None:
            raise self._error("POST", str(kind), 409, "AlreadyExists")
        return self.put(kind, body)

    def replace_child(self, kind: ChildKind, body: dict[str, Any]) -> dict[str, Any]:
        metadata = body["metadata"]
        self.requests.append(("PUT", f"{kind}/{metadata['name']}"))
        current = self.child(kind, metadata["namespace"], metadata["name"])
        if current is None:
            raise self._error("PUT", str(kind), 404, "NotFound")
        if metadata.get("resourceVersion") != current["metadata"]["resourceVersion"]:
            raise self._error("PUT", str(kind), 409, "Conflict")
        return self.put(kind, {**body, "metadata": {**metadata, "uid": current["metadata"]["uid"]}})

    def delete_child(self, kind: ChildKind, namespace: str, name: str, *, uid: str) -> bool:
        self.requests.append(("DELETE", f"{kind}/{name}"))
        current = self.child(kind, namespace, name)
        if current is None or current["metadata"]["uid"] != uid:  # gone, or the uid precondition fails
            return False
        del self.objects[(str(kind), namespace, name)]
        return True

    def request_token(self, namespace: str, service_account: str, token_request: dict[str, Any], *, now: datetime) -> IssuedToken:
        self.requests.append(("POST", f"ServiceAccount/{service_account}/token"))
        if self.child(ChildKind.SERVICE_ACCOUNT, namespace, service_account) is None:
            raise self._error("POST", "token", 404, "NotFound")
        seconds = int(token_request["spec"]["expirationSeconds"])
        return IssuedToken(token=f"token-{next(self._uids)}", issued_at=now, expires_at=now + timedelta(seconds=seconds))

    def write_token(
        self, namespace: str, secret_name: str, *, data: dict[str, str], annotations: dict[str, str]
    ) -> dict[str, Any]:
        self.requests.append(("PATCH", f"Secret/{secret_name}"))
        current = self.child(ChildKind.TOKEN_SECRET, namespace, secret_name)
        assert current is not None
        current["metadata"].setdefault("annotations", {}).update(annotations)
        current["data"] = {key: base64.b64encode(value.encode()).decode() for key, value in data.items()}
        current["metadata"]["resourceVersion"] = str(next(self._versions))
        return copy.deepcopy(current)

    def get_identity(self, namespace: str, name: str) -> dict[str, Any] | None:
        found = self.identities.get((namespace, name))
        return copy.deepcopy(found) if found else None

    def get_profile(self, name: str) -> dict[str, Any] | None:
        return None

    def patch_identity_status(self, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        self.requests.append(("PATCH", f"AgentIdentity/{name}/status"))
        body = self.identities[(namespace, name)]
        body["status"] = {**(body.get("status") or {}), **status}
        return copy.deepcopy(body)

    def patch_identity_metadata(self, namespace: str, name: str, metadata: dict[str, Any]) -> dict[str, Any]:
        self.requests.append(("PATCH", f"AgentIdentity/{name}"))
        body = self.identities[(namespace, name)]
        body["metadata"].update(metadata)
        return copy.deepcopy(body)

    def record_event(self, *, involved: dict[str, Any], event_type: str, reason: str, message: str, now: datetime) -> None:
        self.events.append(reason)

    def delete_pods(self, namespace: str, *, service_account: str, grace_seconds: int) -> None:
        self.requests.append(("DELETECOLLECTION", f"Pod/serviceAccountName={service_account}"))
