"""The one thin facade between the operator and the Kubernetes API.

Plain dicts in, plain dicts out, over the official client's connection handling (auth, TLS,
pooling): the builders produce API objects as dicts, and converting them to the client's model
classes and back would cost time on the hot path and buy nothing. Every method is one request.

Errors surface as :class:`KubeError` carrying the status code and the server's reason, never a
request or response body: a Secret or a TokenRequest response must not reach a log line.
"""

from __future__ import annotations

import base64
import contextlib
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import orjson
import urllib3
from kubernetes import client, config
from kubernetes.client import rest

from agent_identity import GROUP, PLURAL, VERSION
from agent_identity.api.durations import format_timestamp, parse_timestamp
from agent_identity.plan.children import ChildKind, IssuedToken
from agent_identity.plan.pods import WORKLOAD_PLURALS

_COLLECTIONS = {
    ChildKind.SERVICE_ACCOUNT: "/api/v1/namespaces/{namespace}/serviceaccounts",
    ChildKind.ROLE: "/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/roles",
    ChildKind.ROLE_BINDING: "/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/rolebindings",
    ChildKind.TOKEN_SECRET: "/api/v1/namespaces/{namespace}/secrets",
}
_IDENTITIES = f"/apis/{GROUP}/{VERSION}/namespaces/{{namespace}}/{PLURAL}"
_MERGE_PATCH = "application/merge-patch+json"
_METADATA = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"
_METADATA_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
# Identities per page of a full listing (why 2,000: docs/design/0005-listing-page-size.md).
LIST_PAGE = 2000
_STORED = {
    "Secret": "/api/v1/namespaces/{namespace}/secrets",
    "ConfigMap": "/api/v1/namespaces/{namespace}/configmaps",
    "Lease": "/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases",
}


DELETED = "<deleted>"
USER_AGENT = "agent-identity-operator"
# Where Events about cluster-scoped objects go (client-go's recorder does the same; the API server
# accepts an old-style Event without an involvedObject namespace only there).
CLUSTER_EVENTS_NAMESPACE = "default"
IDENTITY = "AgentIdentity"
ChildKey = tuple[str, str, str]  # (kind, namespace, name)


def _selectors(label_selector: str | None, field_selector: str | None) -> dict[str, str]:
    """The query parameters of a list or watch's selectors, those given."""
    selectors = {"labelSelector": label_selector, "fieldSelector": field_selector}
    return {key: value for key, value in selectors.items() if value}


class OwnWrites:
    """Tells the watch echoes of the operator's own child writes from anyone else's changes.

    A write's echo can arrive on the watch before the write's response: while a write is in
    flight, events for that child are held and judged when it returns (the resourceVersion it
    returned, or DELETED). Echoes need no reconcile; anything else calls its ``on_foreign``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last: dict[ChildKey, str] = {}  # our last write's resourceVersion, or DELETED
        self._in_flight: dict[ChildKey, list[tuple[str, Callable[[], None]]]] = {}

    def begin(self, key: ChildKey) -> None:
        with self._lock:
            self._in_flight[key] = []

    def finish(self, key: ChildKey, version: str | None, *, remember: bool = True) -> None:
        """The write returned ``version`` (None: it failed, so every held event counts as foreign).
        ``remember``: judge later events by it too (not needed where the caller caches the
        written object itself, as the controller does for identities)."""
        with self._lock:
            held = self._in_flight.pop(key, [])
            if version is not None and remember:
                self._last[key] = version
        for seen, on_foreign in held:
            if seen != version:
                on_foreign()

    def is_echo(self, key: ChildKey, version: str, on_foreign: Callable[[], None]) -> bool:
        """Whether an event (``version`` DELETED for a deletion) echoes our own write. True also
        while a write is in flight: ``on_foreign`` then runs later if it turns out not to be."""
        with self._lock:
            if key in self._in_flight:
                self._in_flight[key].append((version, on_foreign))
                return True
            if version == DELETED:  # gone: nothing of it to remember, whoever deleted it
                return self._last.pop(key, None) == DELETED
            return self._last.get(key) == version


UNREACHABLE = 0  # KubeError.status when the API server gave no answer
NOT_LEADER = -1  # KubeError.status of a write this replica refused to send (it lost the lease)
THROTTLE_RETRIES = 5
THROTTLE_MAX_WAIT_S = 10.0


class KubeError(Exception):
    """An API request failed. Carries the status and the server's message, never a body we sent."""

    def __init__(self, *, method: str, path: str, status: int, reason: str, message: str) -> None:
        super().__init__(f"{method} {path}: {status} {reason}: {message}")
        self.path = path
        self.status = status
        self.reason = reason
        self.message = message

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def unreachable(self) -> bool:
        """No answer at all: connection refused or reset, a timeout, a broken stream."""
        return self.status == UNREACHABLE

    @property
    def conflict(self) -> bool:
        return self.status == 409


@contextlib.contextmanager
def unreachable_as_kube_error(method: str, path: str) -> Iterator[None]:
    """Every way a request can get no answer (refused, reset, timed out, a stream cut short: urllib3
    errors are not all OSErrors) becomes one :class:`KubeError` that callers already handle."""
    try:
        yield
    except (urllib3.exceptions.HTTPError, OSError) as error:
        message = f"{type(error).__name__}: {error}"[:300]  # host, port and path at most: never a body
        raise KubeError(method=method, path=path, status=UNREACHABLE, reason="Unreachable", message=message) from None


def retry_after(header: str | None) -> float:
    """Seconds to wait as a 429's Retry-After says (1 s when it says nothing usable), at most 10 s."""
    try:
        return min(max(float(header or 1), 0.0), THROTTLE_MAX_WAIT_S)
    except ValueError:
        return 1.0


@dataclass(frozen=True)
class ClusterAccess:
    """What the agent's kubeconfig needs: where the API server is and which CA signs it."""

    server: str
    ca_cert: str


def load_client_configuration(kubeconfig: str | None = None) -> client.Configuration:
    configuration = client.Configuration()
    if kubeconfig:
        config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    else:
        try:
            config.load_incluster_config(client_configuration=configuration)
        except config.ConfigException:
            config.load_kube_config(client_configuration=configuration)
    return configuration


WORKLOAD_RESOURCES = {"pods": "/api/v1", "jobs": "/apis/batch/v1"}


def _workload_collection(resource: str, namespace: str | None) -> str:
    prefix = WORKLOAD_RESOURCES[resource]
    return f"{prefix}/namespaces/{quote(namespace)}/{resource}" if namespace else f"{prefix}/{resource}"


class Kube:
    """Thread-safe: the reconcile workers share one instance and its connection pool."""

    def __init__(self, configuration: client.Configuration, *, pool_size: int = 16) -> None:
        configuration.connection_pool_maxsize = pool_size
        self._configuration = configuration
        # The client's own connection pool, TLS and proxy settings, used directly: its generic
        # request path (parameter serialisation, URL parsing per call) was a quarter of the
        # operator's CPU in a burst, for requests whose paths and bodies are already plain.
        manager = rest.RESTClientObject(configuration).pool_manager
        self._pool: urllib3.HTTPConnectionPool = manager.connection_from_url(configuration.host)
        self._prefix = urlsplit(configuration.host).path.rstrip("/")
        self._lock = threading.Lock()
        self.request_counts: Counter[str] = Counter()  # "POST" -> n; read by tests and benchmarks
        self.own_writes = OwnWrites()
        # Called with the object every AgentIdentity write returns (the controller's cache).
        self.on_identity_written: Callable[[dict[str, Any]], None] = lambda body: None
        # The reconciler's writes are fenced by this (leader election); key rings, Leases and
        # access reviews are not: every replica keeps its keys, competes and serves webhooks.
        self.may_write: Callable[[], bool] = lambda: True

    # -- plumbing -------------------------------------------------------------------------------

    def _send(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: dict[str, str] | None = None,
        content_type: str = "application/json",
        accept: str = "application/json",
        timeout: tuple[float, float] = (5, 30),
        stream: bool = False,
        fenced: bool = True,
    ) -> urllib3.BaseHTTPResponse:
        """Sends one request; ``stream``: the body is left unread (see :meth:`watch_children`).
        A write the reconciler makes (``fenced``) is refused here, before it leaves the process,
        when :attr:`may_write` says this replica may not act (it lost the lease)."""
        if fenced and method != "GET" and not self.may_write():
            raise KubeError(method=method, path=path, status=NOT_LEADER, reason="NotLeader", message="this replica may not write")
        headers = {"Content-Type": content_type, "Accept": accept, "User-Agent": USER_AGENT}
        bearer = self._configuration.auth_settings().get("BearerToken")  # refreshed by the client when due
        if bearer:
            headers["Authorization"] = str(bearer["value"])
        with self._lock:
            self.request_counts[method] += 1
        with unreachable_as_kube_error(method, path):
            return self._pool.urlopen(
                method,
                self._prefix + path + (f"?{urlencode(query)}" if query else ""),
                body=None if body is None else orjson.dumps(body),
                headers=headers,
                timeout=urllib3.Timeout(connect=timeout[0], read=timeout[1]),
                redirect=False,
                preload_content=not stream,
                release_conn=not stream,
            )

    def _request(self, method: str, path: str, **options: Any) -> dict[str, Any]:
        """One request, read whole: the JSON it returns, or :class:`KubeError` (``options``: :meth:`_send`'s).
        A 429 is retried after the ``Retry-After`` the API server asked for (at most 10 s, 5 times)."""
        for attempt in range(THROTTLE_RETRIES + 1):
            response = self._send(method, path, **options)
            data = response.data
            if response.status == 429 and attempt < THROTTLE_RETRIES:
                time.sleep(retry_after(response.headers.get("Retry-After")))
                continue
            break
        if not 200 <= response.status < 300:
            raise self._error(method, path, response.status, data)
        return dict(orjson.loads(data)) if data else {}

    @staticmethod
    def _error(method: str, path: str, status: int, data: bytes) -> KubeError:
        reason, message = "Unknown", ""
        try:
            status_object = json.loads(data)
            reason, message = str(status_object.get("reason", reason)), str(status_object.get("message", ""))
        except ValueError:
            message = f"non-JSON response of {len(data)} bytes"
        return KubeError(method=method, path=path, status=status, reason=reason, message=message)

    def _get_or_none(self, path: str) -> dict[str, Any] | None:
        try:
            return self._request("GET", path)
        except KubeError as error:
            if error.not_found:
                return None
            raise

    # -- cluster facts --------------------------------------------------------------------------

    def cluster_access(self, *, server_override: str | None = None) -> ClusterAccess:
        ca_file = self._configuration.ssl_ca_cert
        ca_cert = Path(ca_file).read_text() if ca_file else ""
        return ClusterAccess(server=server_override or self._configuration.host, ca_cert=ca_cert)

    def served_resources(self) -> set[str]:
        """The resources the API server currently serves in our group/version (discovery)."""
        try:
            return {str(r["name"]) for r in self._request("GET", f"/apis/{GROUP}/{VERSION}").get("resources", [])}
        except KubeError:
            return set()

    # -- AgentIdentities ------------------------------------------------------------------------

    def get_identity(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._get_or_none(f"{_IDENTITIES.format(namespace=namespace)}/{quote(name)}")

    def list_identities(
        self, namespace: str | None = None, *, label_selector: str | None = None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """The identities: at most ``limit``, otherwise every one (see :meth:`identity_pages`)."""
        pages = self.identity_pages(namespace, label_selector=label_selector, limit=limit)
        return [item for page, _ in pages for item in page]

    def identity_pages(
        self,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        limit: int | None = None,
        before_each: Callable[[], object] = lambda: None,
    ) -> Iterator[tuple[list[dict[str, Any]], str]]:
        """Every identity, a page of ``LIST_PAGE`` at a time with the page's resourceVersion, so that
        no single response (or its parsing) has to hold 100,000 identities at once. Without their
        managedFields: the largest part of each object, and nothing the operator reads.
        ``before_each`` runs before each page is asked for (never after the last)."""
        query = _selectors(label_selector, field_selector)
        for page in self._pages(self._identities_path(namespace), query, limit=limit, before_each=before_each):
            version = str((page.get("metadata") or {}).get("resourceVersion", "0"))
            yield [without_managed_fields(item) for item in page.get("items") or []], version

    def _pages(
        self,
        path: str,
        query: dict[str, str],
        *,
        limit: int | None,
        accept: str = "application/json",
        before_each: Callable[[], object] = lambda: None,
    ) -> Iterator[dict[str, Any]]:
        """A list, page by page, all as of the first page's resourceVersion (continue tokens)."""
        query = {**query, "limit": str(limit or LIST_PAGE)}
        while True:
            before_each()
            page = self._request("GET", path, query=query, accept=accept)
            yield page
            token = (page.get("metadata") or {}).get("continue")
            if limit or not token:
                return
            query["continue"] = token

    def identities_version(self, namespace: str | None, *, label_selector: str | None) -> str:
        return self._version(self._identities_path(namespace), label_selector)

    def _version(self, path: str, label_selector: str | None, *, field_selector: str | None = None) -> str:
        """A collection's current resourceVersion (a one-item metadata list), to watch from."""
        query = {"limit": "1", **_selectors(label_selector, field_selector)}
        listed = self._request("GET", path, query=query, accept=_METADATA_LIST)
        return str(listed["metadata"]["resourceVersion"])

    def watch_identities(
        self, namespace: str | None, *, label_selector: str | None, resource_version: str, timeout_s: int
    ) -> Iterator[dict[str, Any]]:
        """Watch events for AgentIdentities (whole objects) from ``resource_version``."""
        query = _selectors(label_selector, None)
        return self._watch(self._identities_path(namespace), query, resource_version=resource_version, timeout_s=timeout_s)

    @staticmethod
    def _identities_path(namespace: str | None) -> str:
        return _IDENTITIES.format(namespace=namespace) if namespace else f"/apis/{GROUP}/{VERSION}/{PLURAL}"

    def create_identity(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._request("POST", _IDENTITIES.format(namespace=body["metadata"]["namespace"]), body=body)

    def token_review(self, token: str, audiences: list[str] | None = None) -> dict[str, Any]:
        """TokenReview: is this token valid now, and whose is it? (the status part)"""
        spec: dict[str, Any] = {"token": token, **({"audiences": audiences} if audiences else {})}
        review = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": spec}
        answer = self._request("POST", "/apis/authentication.k8s.io/v1/tokenreviews", body=review, fenced=False)
        return dict(answer.get("status", {}))

    def patch_identity_status(self, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        path = f"{_IDENTITIES.format(namespace=namespace)}/{quote(name)}/status"
        return self._patch_identity(namespace, name, path, {"status": status})

    def patch_identity_metadata(self, namespace: str, name: str, metadata: dict[str, Any]) -> dict[str, Any]:
        path = f"{_IDENTITIES.format(namespace=namespace)}/{quote(name)}"
        return self._patch_identity(namespace, name, path, {"metadata": metadata})

    def mark_done(self, namespace: str, name: str) -> dict[str, Any]:
        """Sets spec.done on one AgentIdentity (a merge patch: the one request an agent's Role allows)."""
        path = f"{_IDENTITIES.format(namespace=namespace)}/{quote(name)}"
        return self._patch_identity(namespace, name, path, {"spec": {"done": True}})

    def renew_lease(self, namespace: str, name: str, *, renew_time: str) -> dict[str, Any]:
        """Sets a Lease's spec.renewTime (a merge patch: what an agent's Role allows on its heartbeat Lease)."""
        path = f"{_STORED['Lease'].format(namespace=namespace)}/{quote(name)}"
        body = {"spec": {"renewTime": renew_time}}
        return self._request("PATCH", path, body=body, content_type=_MERGE_PATCH, fenced=False)

    def who_am_i(self) -> str:
        """The username the API server sees for this client's credential (a SelfSubjectReview,
        which every authenticated subject may ask)."""
        review = {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
        answer = self._request("POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews", body=review, fenced=False)
        return str(((answer.get("status") or {}).get("userInfo") or {}).get("username", ""))

    def _patch_identity(self, namespace: str, name: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        key = (IDENTITY, namespace, name)
        written = self._write_child(key, "PATCH", path, remember=False, body=body, content_type=_MERGE_PATCH)
        self.on_identity_written(written)
        return written

    def delete_identity(self, namespace: str, name: str, *, uid: str) -> None:
        self._delete(f"{_IDENTITIES.format(namespace=namespace)}/{quote(name)}", uid=uid)

    def get_profile(self, name: str) -> dict[str, Any] | None:
        return self._get_or_none(f"/apis/{GROUP}/{VERSION}/agentprofiles/{quote(name)}")

    # -- the operator's own state (signing keys, the JWKS mirror, the leader lease) --------------------

    def get_stored(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self._get_or_none(f"{_STORED[kind].format(namespace=namespace)}/{quote(name)}")

    def stored_version(self, kind: str, namespace: str, name: str) -> str:
        """The resourceVersion to watch one stored object (the Lease) from: now."""
        return self._version(_STORED[kind].format(namespace=namespace), None, field_selector=f"metadata.name={name}")

    def watch_stored(
        self, kind: str, namespace: str, name: str, *, resource_version: str, timeout_s: int
    ) -> Iterator[dict[str, Any]]:
        """Watch events for one stored object (the Lease) from ``resource_version``."""
        path = _STORED[kind].format(namespace=namespace)
        query = {"fieldSelector": f"metadata.name={name}"}
        return self._watch(path, query, resource_version=resource_version, timeout_s=timeout_s)

    def store(self, body: dict[str, Any]) -> dict[str, Any]:
        """Creates ``body``, or replaces it when it carries the resourceVersion it was read at
        (a 409 then means someone else wrote first: the caller re-reads)."""
        metadata = body["metadata"]
        collection = _STORED[body["kind"]].format(namespace=metadata["namespace"])
        if metadata.get("resourceVersion"):
            return self._request("PUT", f"{collection}/{quote(metadata['name'])}", body=body, fenced=False)
        return self._request("POST", collection, body=body, fenced=False)

    def create_stored(self, body: dict[str, Any]) -> dict[str, Any]:
        """Creates ``body`` (a 409 means it exists), as the leader only: the seal ledger's claims."""
        metadata = body["metadata"]
        return self._request("POST", _STORED[body["kind"]].format(namespace=metadata["namespace"]), body=body)

    def stored_metadata(self, kind: str, namespace: str, *, label_selector: str) -> Iterator[dict[str, Any]]:
        """The metadata of every stored object of ``kind`` in ``namespace`` matching the selector."""
        path = _STORED[kind].format(namespace=namespace)
        for page in self._pages(path, {"labelSelector": label_selector}, limit=None, accept=_METADATA_LIST):
            yield from page.get("items") or []

    def delete_stored(self, kind: str, namespace: str, name: str, *, uid: str) -> bool:
        """Deletes exactly the object ``uid``; False when it is already gone."""
        return self._delete(f"{_STORED[kind].format(namespace=namespace)}/{quote(name)}", uid=uid)

    # -- namespaces -----------------------------------------------------------------------------

    def get_namespace(self, name: str) -> dict[str, Any] | None:
        """The Namespace (apiVersion and kind included), or None if there is none."""
        return self._get_or_none(f"/api/v1/namespaces/{quote(name)}")

    # -- agent pods and their workloads ---------------------------------------------------------

    def get_workload(self, namespace: str, *, api_version: str, kind: str, name: str) -> dict[str, Any] | None:
        """A pod controller (Deployment, ReplicaSet, Job, ...) by its ownerReference's apiVersion and kind."""
        plural = WORKLOAD_PLURALS.get((api_version, kind))
        if plural is None:
            return None
        prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
        return self._get_or_none(f"{prefix}/namespaces/{quote(namespace)}/{plural}/{quote(name)}")

    def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._get_or_none(f"/apis/batch/v1/namespaces/{quote(namespace)}/jobs/{quote(name)}")

    def get_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._get_or_none(f"/api/v1/namespaces/{quote(namespace)}/pods/{quote(name)}")

    def pods_of(self, namespace: str, *, service_account: str) -> list[dict[str, Any]]:
        """The pods that run as ``service_account`` (a field selector the API server serves from its cache)."""
        query = {"fieldSelector": f"spec.serviceAccountName={service_account}"}
        return list(self._request("GET", f"/api/v1/namespaces/{quote(namespace)}/pods", query=query).get("items") or [])

    def workloads_version(self, resource: str, namespace: str | None, *, label_selector: str) -> str:
        return self._version(_workload_collection(resource, namespace), label_selector)

    def watch_workloads(
        self, resource: str, namespace: str | None, *, label_selector: str, resource_version: str, timeout_s: int
    ) -> Iterator[dict[str, Any]]:
        """Watch events of agent pods or Jobs (``resource``: pods, jobs), metadata only."""
        path = _workload_collection(resource, namespace)
        query = {"labelSelector": label_selector}
        return self._watch(path, query, resource_version=resource_version, timeout_s=timeout_s, accept=_METADATA)

    def delete_pods(self, namespace: str, *, service_account: str, grace_seconds: int) -> None:
        """Deletes every pod that runs as ``service_account``, in one request (a field selector the
        API server serves from its cache: nothing is listed here)."""
        options = {"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": grace_seconds}
        query = {"fieldSelector": f"spec.serviceAccountName={service_account}"}
        self._request("DELETE", f"/api/v1/namespaces/{quote(namespace)}/pods", body=options, query=query)

    # -- authorization ----------------------------------------------------------------------------

    def may(
        self,
        *,
        user: str,
        groups: tuple[str, ...],
        uid: str,
        extra: dict[str, tuple[str, ...]],
        attributes: dict[str, str],
    ) -> bool:
        """SubjectAccessReview: may this user do what ``attributes`` (resourceAttributes) say?"""
        review = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": {
                "user": user,
                "groups": list(groups),
                "uid": uid,
                "extra": {key: list(values) for key, values in extra.items()},
                "resourceAttributes": attributes,
            },
        }
        answer = self._request("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", body=review, fenced=False)
        return bool(answer.get("status", {}).get("allowed"))

    # -- children -------------------------------------------------------------------------------

    def _child_path(self, kind: ChildKind, namespace: str, name: str | None = None) -> str:
        collection = _COLLECTIONS[kind].format(namespace=namespace)
        return f"{collection}/{quote(name)}" if name else collection

    def children_version(self, kind: ChildKind, namespace: str | None, *, label_selector: str) -> str:
        return self._version(self._collection(kind, namespace), label_selector)

    def children_metadata(self, kind: ChildKind, namespace: str | None, *, label_selector: str) -> Iterator[dict[str, Any]]:
        """The metadata of the children ``label_selector`` selects, page by page (no Secret data)."""
        path = self._collection(kind, namespace)
        for page in self._pages(path, {"labelSelector": label_selector}, limit=None, accept=_METADATA_LIST):
            for item in page.get("items") or []:
                yield dict(item.get("metadata") or {})

    def watch_children(
        self, kind: ChildKind, namespace: str | None, *, label_selector: str, resource_version: str, timeout_s: int
    ) -> Iterator[dict[str, Any]]:
        """Watch events for these children from ``resource_version``, metadata only (no Secret
        data crosses the wire)."""
        query = {"labelSelector": label_selector}
        path = self._collection(kind, namespace)
        return self._watch(path, query, resource_version=resource_version, timeout_s=timeout_s, accept=_METADATA)

    def _watch(
        self, path: str, query: dict[str, str], *, resource_version: str, timeout_s: int, accept: str = "application/json"
    ) -> Iterator[dict[str, Any]]:
        """One watch session, event by event, until the server ends it after ``timeout_s``."""
        query = {
            **query,
            "watch": "true",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(timeout_s),
        }
        response = self._send("GET", path, query=query, accept=accept, timeout=(5, timeout_s + 30), stream=True)
        try:
            if response.status != 200:
                raise self._error("WATCH", path, response.status, response.read())
            with unreachable_as_kube_error("WATCH", path):
                for line in response:  # one JSON event per line
                    if line.strip():
                        yield dict(orjson.loads(line))
        finally:
            response.close()  # a watch left early still has data on the wire: never reuse it
            response.release_conn()

    def _collection(self, kind: ChildKind, namespace: str | None) -> str:
        template = _COLLECTIONS[kind]
        return template.format(namespace=namespace) if namespace else template.replace("/namespaces/{namespace}", "")

    def get_child(self, kind: ChildKind, namespace: str, name: str) -> dict[str, Any] | None:
        return self._get_or_none(self._child_path(kind, namespace, name))

    def create_child(self, kind: ChildKind, body: dict[str, Any]) -> dict[str, Any]:
        namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
        return self._write_child((str(kind), namespace, name), "POST", self._child_path(kind, namespace), body=body)

    def replace_child(self, kind: ChildKind, body: dict[str, Any]) -> dict[str, Any]:
        namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
        return self._write_child((str(kind), namespace, name), "PUT", self._child_path(kind, namespace, name), body=body)

    def delete_child(self, kind: ChildKind, namespace: str, name: str, *, uid: str) -> bool:
        """Deletes exactly the object with this uid; False when it was already gone."""
        key = (str(kind), namespace, name)
        self.own_writes.begin(key)
        deleted = False
        try:
            deleted = self._delete(self._child_path(kind, namespace, name), uid=uid)
        finally:
            self.own_writes.finish(key, DELETED if deleted else None)
        return deleted

    def _write_child(self, key: ChildKey, method: str, path: str, *, remember: bool = True, **request: Any) -> dict[str, Any]:
        """One write to a child (or an identity), registered with :attr:`own_writes` so its
        watch echo is recognised."""
        self.own_writes.begin(key)
        version = None
        try:
            written = self._request(method, path, **request)
            version = str(written["metadata"]["resourceVersion"])
        finally:
            self.own_writes.finish(key, version, remember=remember)
        return written

    def _delete(self, path: str, *, uid: str) -> bool:
        body = {"kind": "DeleteOptions", "apiVersion": "v1", "preconditions": {"uid": uid}, "propagationPolicy": "Background"}
        try:
            self._request("DELETE", path, body=body)
        except KubeError as error:
            if error.not_found or error.conflict:  # gone, or replaced by an object that is not ours
                return False
            raise
        return True

    def write_token(
        self, namespace: str, secret_name: str, *, data: dict[str, str], annotations: dict[str, str]
    ) -> dict[str, Any]:
        encoded = {key: base64.b64encode(value.encode()).decode() for key, value in data.items()}
        body = {"metadata": {"annotations": annotations}, "data": encoded}
        path = self._child_path(ChildKind.TOKEN_SECRET, namespace, secret_name)
        key = (str(ChildKind.TOKEN_SECRET), namespace, secret_name)
        return self._write_child(key, "PATCH", path, body=body, content_type=_MERGE_PATCH)

    def request_token(self, namespace: str, service_account: str, token_request: dict[str, Any], *, now: datetime) -> IssuedToken:
        path = f"{self._child_path(ChildKind.SERVICE_ACCOUNT, namespace, service_account)}/token"
        status = self._request("POST", path, body=token_request).get("status", {})
        return IssuedToken(
            token=str(status["token"]),
            issued_at=now,
            expires_at=parse_timestamp(str(status["expirationTimestamp"])),
        )

    # -- events ---------------------------------------------------------------------------------

    def record_event(self, *, involved: dict[str, Any], event_type: str, reason: str, message: str, now: datetime) -> None:
        """An Event about ``involved``, in its namespace; about a cluster-scoped object (a Namespace),
        in ``default`` with no involvedObject namespace, where ``kubectl describe`` finds it."""
        metadata = involved["metadata"]
        timestamp = format_timestamp(now)
        reference = {k: involved[k] for k in ("apiVersion", "kind")} | {"name": metadata["name"], "uid": metadata["uid"]}
        if metadata.get("namespace"):
            reference["namespace"] = metadata["namespace"]
        namespace = metadata.get("namespace") or CLUSTER_EVENTS_NAMESPACE
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{metadata['name']}.", "namespace": namespace},
            "involvedObject": reference,
            "type": event_type,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": "agent-identity-operator"},
            "reportingComponent": "agentidentity.dev/operator",
            "reportingInstance": "agent-identity-operator",
            "firstTimestamp": timestamp,
            "lastTimestamp": timestamp,
            "count": 1,
        }
        self._request("POST", f"/api/v1/namespaces/{namespace}/events", body=event)


def without_managed_fields(obj: dict[str, Any]) -> dict[str, Any]:
    """The object without its managedFields (the largest part of it, and nothing the operator
    reads); the object itself, uncopied, when it has none."""
    metadata = obj.get("metadata") or {}
    if "managedFields" not in metadata:
        return obj
    return {**obj, "metadata": {key: value for key, value in metadata.items() if key != "managedFields"}}
