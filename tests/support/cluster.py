"""A thin test client over the real API server: plain dicts, the same shapes as the manifests."""

from __future__ import annotations

import base64
import os
import re
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from agent_identity.local.controlplane import LocalControlPlane

REPO = Path(__file__).resolve().parents[2]
GROUP, VERSION, PLURAL = "agentidentity.dev", "v1alpha1", "agentidentities"
OPERATOR_NAMESPACE = "agent-identity-system"  # the operator's own (its --operator-namespace default)
T = TypeVar("T")
# What the attacker of the status and replay suites holds: a namespace's `edit` role on identities
# (create, get, list, delete, and patch of their status), and reading the ConfigMaps their scopes name.
IDENTITY_EDITOR = [
    {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]},
    {"apiGroups": [GROUP], "resources": [PLURAL], "verbs": ["create", "get", "list", "delete"]},
    {"apiGroups": [GROUP], "resources": [f"{PLURAL}/status"], "verbs": ["patch", "update"]},
]
# The audit log of a --kubeconfig cluster's API server, where this machine reads it (make kind-e2e
# mounts the node's into its directory); the local control plane's is known without it.
AUDIT_LOG_ENV = "AGENT_IDENTITY_AUDIT_LOG"


# Every agent's Role holds, besides its task's scopes, patch on its own AgentIdentity (by name), so
# that it can retire itself (spec.done): (apiGroups, resources, verbs) as the tests compare rules.
SELF_RETIRE_RULE = (["agentidentity.dev"], ["agentidentities"], ["patch"])


def wait_for(what: str, probe: Callable[[], T | None], *, timeout: float = 30.0, interval: float = 0.1) -> T:
    """Polls ``probe`` until it returns something truthy; fails with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def http_get(url: str) -> tuple[int, bytes]:
    """The status code and body a GET of ``url`` answers with; (0, b"") when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as error:
        return int(error.code), error.read()
    except OSError:
        return 0, b""


def http_status(url: str) -> int:
    return http_get(url)[0]


def local_plane(cluster: Cluster, needs: str) -> LocalControlPlane:
    """The local control plane the suite started, for a test that acts on its parts (``needs``
    says what it does with it); on any other cluster (``--kubeconfig``: kind, ...) the test is
    skipped, saying so. The one way a test asks for it: ``pytest -rs`` lists every such skip."""
    if cluster.plane is None:
        pytest.skip(f"needs the local control plane: {needs} (not possible on the --kubeconfig cluster)")
    return cluster.plane


def audit_log(cluster: Cluster, needs: str) -> Path:
    """The API server's audit log (JSON lines, every write request, rotated files beside it), for a
    test that reads it (``needs`` says what for); skipped, saying so, where there is none."""
    if cluster.audit_log is None:
        pytest.skip(
            f"needs the API server's audit log: {needs} (the local control plane writes one; on a --kubeconfig "
            f"cluster, {AUDIT_LOG_ENV} names it: make kind-e2e's cluster writes one)"
        )
    return cluster.audit_log


def make_identity(name: str, namespace: str, **changes: Any) -> dict[str, Any]:
    """An AgentIdentity manifest; keyword arguments replace spec fields (``None`` removes one)."""
    spec: dict[str, Any] = {
        "task": f"test task for {name}",
        "ttl": "10m",
        "delegator": {"kind": "User", "name": "alice"},
        "scopes": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}],
    }
    for key, value in changes.items():
        if value is None:
            spec.pop(key, None)
        else:
            spec[key] = value
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "AgentIdentity",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


class Cluster:
    def __init__(self, *, kubeconfig: Path, plane: LocalControlPlane | None = None) -> None:
        self.kubeconfig = kubeconfig
        self.plane = plane  # the local control plane, when the suite started it (chaos restarts its parts)
        given = os.environ.get(AUDIT_LOG_ENV)
        self.audit_log = plane.audit_log if plane else Path(given) if given else None  # see audit_log()
        self.api_client = config.new_client_from_config(config_file=str(kubeconfig))
        self.core = client.CoreV1Api(self.api_client)
        self.rbac = client.RbacAuthorizationV1Api(self.api_client)
        self.custom = client.CustomObjectsApi(self.api_client)
        self.auth = client.AuthenticationV1Api(self.api_client)
        self.host = self.api_client.configuration.host
        self.ca_file = self.api_client.configuration.ssl_ca_cert

    # -- set-up ---------------------------------------------------------------------------------

    def install_crds(self) -> None:
        extensions = client.ApiextensionsV1Api(self.api_client)
        for path in sorted((REPO / "crds").glob("*.yaml")):
            crd = yaml.safe_load(path.read_text())
            try:
                extensions.create_custom_resource_definition(crd)
            except ApiException as error:
                if error.status != 409:
                    raise
                current = extensions.read_custom_resource_definition(crd["metadata"]["name"])
                crd["metadata"]["resourceVersion"] = current.metadata.resource_version
                extensions.replace_custom_resource_definition(crd["metadata"]["name"], crd)
            wait_for(
                f"CRD {crd['metadata']['name']} established",
                lambda name=crd["metadata"]["name"]: any(
                    c.type == "Established" and c.status == "True"
                    for c in (extensions.read_custom_resource_definition(name).status.conditions or [])
                ),
            )

    def create_test_namespace(self, test_name: str) -> str:
        stem = re.sub(r"[^a-z0-9-]+", "-", test_name.lower()).strip("-")[:40].strip("-")
        name = f"t-{stem}-{uuid.uuid4().hex[:5]}"
        self.core.create_namespace({"metadata": {"name": name}})
        # Pods need the namespace's default ServiceAccount (the ServiceAccount admission plugin looks
        # it up), which the controller manager creates: at once, or once its watches are back after
        # an API server outage (a chaos test before this one).
        wait_for(f"{name}'s default ServiceAccount", lambda: self.has_service_account(name, "default"), timeout=90, interval=0.2)
        return name

    def has_service_account(self, namespace: str, name: str) -> bool | None:
        """True if it exists, None if not (a ``wait_for`` probe)."""
        try:
            self.core.read_namespaced_service_account(name, namespace)
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return True

    def ensure_namespace(self, name: str) -> None:
        try:
            self.core.create_namespace({"metadata": {"name": name}})
        except ApiException as error:
            if error.status != 409:
                raise

    def delete_namespace(self, name: str) -> None:
        try:
            self.core.delete_namespace(name)
        except ApiException as error:
            if error.status != 404:
                raise

    def service_account_kubeconfig(self, namespace: str, name: str, path: Path) -> Path:
        """A kubeconfig that authenticates as ServiceAccount ``namespace/name`` with a fresh token."""
        request = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": 3600}}
        token = self.core.create_namespaced_service_account_token(name, namespace, request).status.token
        document = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "c", "cluster": {"server": self.host, "certificate-authority": self.ca_file}}],
            "users": [{"name": name, "user": {"token": token}}],
            "contexts": [{"name": name, "context": {"cluster": "c", "user": name}}],
            "current-context": name,
        }
        path.write_text(yaml.safe_dump(document))
        return path

    # -- AgentIdentities ------------------------------------------------------------------------

    def create_identity(self, manifest: dict[str, Any]) -> dict[str, Any]:
        namespace = manifest["metadata"]["namespace"]
        return dict(self.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, manifest))

    def get_identity(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return dict(self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name))
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    def patch_identity(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        return dict(self.custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, patch))

    def delete_identity(self, namespace: str, name: str) -> None:
        self.custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)

    def phase(self, namespace: str, name: str) -> str | None:
        identity = self.get_identity(namespace, name)
        return ((identity or {}).get("status") or {}).get("phase")

    def wait_phase(self, namespace: str, name: str, phase: str, *, timeout: float = 30.0) -> dict[str, Any]:
        def probe() -> dict[str, Any] | None:
            identity = self.get_identity(namespace, name)
            return identity if identity and (identity.get("status") or {}).get("phase") == phase else None

        return wait_for(f"{namespace}/{name} to be {phase}", probe, timeout=timeout)

    def grant(self, namespace: str, user: str, rules: list[dict[str, Any]], *, name: str | None = None) -> str:
        """A Role with ``rules`` bound to ``user`` in ``namespace`` (what a namespace admin hands
        out); the Role's name."""
        name = name or f"grant-{user}"
        self.rbac.create_namespaced_role(namespace, {"metadata": {"name": name}, "rules": rules})
        self.rbac.create_namespaced_role_binding(
            namespace,
            {
                "metadata": {"name": name},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
                "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
            },
        )
        return name

    def bind_cluster_role(self, namespace: str, user: str, role: str) -> None:
        """``role`` (a ClusterRole, such as the built-in ``edit``) for ``user`` in ``namespace``."""
        self.rbac.create_namespaced_role_binding(
            namespace,
            {
                "metadata": {"name": f"{role}-{user}"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
                "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
            },
        )

    # -- children and tokens ----------------------------------------------------------------------

    def children(self, namespace: str, identity_name: str) -> dict[str, list[str]]:
        """Every labelled child of one identity, by kind (to count duplicates and orphans)."""
        selector = f"agentidentity.dev/identity={identity_name}"
        return {
            "ServiceAccount": [
                o.metadata.name for o in self.core.list_namespaced_service_account(namespace, label_selector=selector).items
            ],
            "Role": [o.metadata.name for o in self.rbac.list_namespaced_role(namespace, label_selector=selector).items],
            "RoleBinding": [
                o.metadata.name for o in self.rbac.list_namespaced_role_binding(namespace, label_selector=selector).items
            ],
            "Secret": [o.metadata.name for o in self.core.list_namespaced_secret(namespace, label_selector=selector).items],
        }

    def token_secret(self, namespace: str, identity_name: str) -> dict[str, str]:
        secret = self.core.read_namespaced_secret(f"aid-{identity_name}-token", namespace)
        return {key: base64.b64decode(value).decode() for key, value in (secret.data or {}).items()}

    def token_review(self, token: str, audiences: list[str] | None = None) -> dict[str, Any]:
        spec: dict[str, Any] = {"token": token}
        if audiences:
            spec["audiences"] = audiences
        review = self.auth.create_token_review({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": spec})
        status = review.status
        return {
            "authenticated": bool(status.authenticated),
            "username": status.user.username if status.user else None,
            "error": status.error,
        }

    def token_client(self, token: str) -> client.ApiClient:
        """An API client that authenticates with ``token`` only (no client certificate)."""
        configuration = client.Configuration()
        configuration.host = self.host
        configuration.ssl_ca_cert = self.ca_file
        configuration.api_key = {"BearerToken": f"Bearer {token}"}
        configuration.api_key_prefix = {}
        return client.ApiClient(configuration)

    def as_token(self, token: str) -> client.CoreV1Api:
        return client.CoreV1Api(self.token_client(token))

    def call_status(self, call: Callable[[], object]) -> int:
        """The HTTP status of one API call: 200 on success, else the error's code."""
        try:
            call()
        except ApiException as error:
            return int(error.status)
        return 200

    def events(self, namespace: str, name: str) -> list[str]:
        events = self.core.list_namespaced_event(namespace, field_selector=f"involvedObject.name={name}").items
        return [event.reason for event in events]


def impersonated(cluster: Cluster, user: str, groups: tuple[str, ...] = ("system:authenticated",)) -> client.ApiClient:
    """An API client acting as ``user`` (the admin impersonates it)."""
    api = config.new_client_from_config(config_file=str(cluster.kubeconfig))
    api.set_default_header("Impersonate-User", user)
    for group in groups:
        api.set_default_header("Impersonate-Group", group)
    return api


def impersonating(cluster: Cluster, user: str, groups: tuple[str, ...] = ("system:authenticated",)) -> client.CustomObjectsApi:
    """A client acting as ``user``, to create identities as that user."""
    return client.CustomObjectsApi(impersonated(cluster, user, groups))
