"""A Python API for orchestrators: issue an identity, get its credentials, delegate to a narrower
child, revoke when done. Agent frameworks that spawn sub-agents use it like this::

    agents = AgentIdentities(namespace="support")
    with agents.identity(task="plan the review", ttl="10m", scopes=[...], delegator=user("alice")) as planner:
        with agents.delegated(planner, task="fetch notes", ttl="2m", scopes=[...]) as crawler:
            run_crawler(kubeconfig=crawler.kubeconfig)
    # both revoked here, the crawler first

Everything goes through the API server (and so through the operator's admission policy); nothing
here mints tokens itself.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kubernetes import client

from agent_identity import API_VERSION, KIND
from agent_identity.api.durations import parse_timestamp
from agent_identity.api.v1alpha1 import SETTLED_PHASES, Phase
from agent_identity.kube.client import Kube, KubeError, load_client_configuration
from agent_identity.plan.children import ChildKind, heartbeat_lease_name
from agent_identity.plan.drift import decode_secret_data
from agent_identity.plan.heartbeat import format_micro

# What ``wait`` returns on: settled (api.SETTLED_PHASES), or Failed (an outcome worth reporting).
OUTCOME_PHASES = SETTLED_PHASES | {Phase.FAILED}


class IdentityRefused(Exception):
    """The API server, the admission webhook or the operator refused the identity; says why."""


@dataclass(frozen=True)
class Credentials:
    namespace: str
    name: str
    expires_at: datetime
    delegation_chain: tuple[str, ...]
    token: str = field(repr=False)
    kubeconfig: str = field(repr=False)
    ca_cert: str = field(repr=False)
    assertion: str | None = field(default=None, repr=False)

    def done(self) -> None:
        """The task is over: retires this identity now, with its own token (the one right its
        Role grants besides its scopes), and its delegates with it."""
        self._as_agent(lambda kube: retire_own(kube, namespace=self.namespace, name=self.name))

    def heartbeat(self) -> None:
        """Renews this identity's heartbeat Lease (spec.heartbeat) with its own token."""
        self._as_agent(lambda kube: renew_own(kube, namespace=self.namespace, name=self.name))

    def _as_agent(self, call: Callable[[Kube], None]) -> None:
        """``call`` with a client that authenticates with this identity's own token only."""
        configuration = client.Configuration()
        configuration.host = str(json.loads(self.kubeconfig)["clusters"][0]["cluster"]["server"])
        configuration.api_key = {"authorization": self.token}
        configuration.api_key_prefix = {"authorization": "Bearer"}
        with tempfile.NamedTemporaryFile("w", suffix=".crt", delete=False) as ca:
            ca.write(self.ca_cert)
        configuration.ssl_ca_cert = ca.name
        try:
            call(Kube(configuration, pool_size=1))
        finally:
            os.unlink(ca.name)


AGENT_PREFIX = "system:serviceaccount:"


def own_identity(kube: Kube) -> tuple[str, str]:
    """(namespace, name) of the AgentIdentity whose credential ``kube`` uses: its ServiceAccount
    is aid-<name>, as the API server says (SelfSubjectReview). Raises :class:`IdentityRefused`
    when the credential is not an agent's."""
    username = kube.who_am_i()
    namespace, _, account = username.removeprefix(AGENT_PREFIX).partition(":")
    if not username.startswith(AGENT_PREFIX) or not account.startswith("aid-"):
        raise IdentityRefused(f"{username or 'this credential'} is not an agent's (no aid-<name> ServiceAccount)")
    return namespace, account.removeprefix("aid-")


def retire_own(kube: Kube, *, namespace: str, name: str) -> None:
    """Sets spec.done on ``namespace/name``: retired now (reason SelfRetired). Raises
    :class:`IdentityRefused` with the API server's or the webhook's reason when refused."""
    try:
        kube.mark_done(namespace, name)
    except KubeError as error:
        if error.not_found:
            raise IdentityRefused(f"AgentIdentity {namespace}/{name} does not exist (already removed)") from None
        raise IdentityRefused(error.message or str(error)) from None


def renew_own(kube: Kube, *, namespace: str, name: str) -> None:
    """Renews the heartbeat Lease of ``namespace/name`` (spec.heartbeat) now. Raises
    :class:`IdentityRefused` when refused (an identity with no heartbeat has no Lease)."""
    try:
        kube.renew_lease(namespace, heartbeat_lease_name(name), renew_time=format_micro(datetime.now(UTC)))
    except KubeError as error:
        raise IdentityRefused(error.message or str(error)) from None


def heartbeat(kube: Kube | None = None) -> tuple[str, str]:
    """From inside an agent's pod: I am alive (spec.heartbeat). Call it at least once a period;
    the one-line call: ``from agent_identity.sdk.client import heartbeat; heartbeat()``."""
    kube = kube or Kube(load_client_configuration(), pool_size=1)
    namespace, name = own_identity(kube)
    renew_own(kube, namespace=namespace, name=name)
    return namespace, name


def done(kube: Kube | None = None) -> tuple[str, str]:
    """From inside an agent's pod (or with any agent credential): the task is over, retire my
    identity now. The one-line call: ``from agent_identity.sdk.client import done; done()``.
    Returns (namespace, name) of the identity retired."""
    kube = kube or Kube(load_client_configuration(), pool_size=1)
    namespace, name = own_identity(kube)
    retire_own(kube, namespace=namespace, name=name)
    return namespace, name


def user(name: str) -> dict[str, str]:
    return {"kind": "User", "name": name}


def service_account(namespace: str, name: str) -> dict[str, str]:
    return {"kind": "ServiceAccount", "namespace": namespace, "name": name}


class AgentIdentities:
    def __init__(self, *, namespace: str = "default", kube: Kube | None = None, kubeconfig: str | None = None) -> None:
        self.namespace = namespace
        self.kube = kube or Kube(load_client_configuration(kubeconfig))

    def manifest(
        self,
        *,
        task: str,
        scopes: list[dict[str, Any]],
        ttl: str | None = None,
        delegator: dict[str, str] | None = None,
        name: str | None = None,
        audiences: list[str] | None = None,
        profile: str | None = None,
    ) -> dict[str, Any]:
        spec: dict[str, Any] = {"task": task, "scopes": scopes}
        optional = {
            "ttl": ttl,
            "delegator": delegator,
            "profile": profile,
            "token": {"audiences": audiences} if audiences else None,
        }
        spec.update({key: value for key, value in optional.items() if value})
        return {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "metadata": {"name": name or f"agent-{uuid.uuid4().hex[:8]}", "namespace": self.namespace},
            "spec": spec,
        }

    def issue(self, *, timeout: float = 30.0, **spec: Any) -> Credentials:
        """Creates an AgentIdentity, waits until it is Ready, and returns its credentials."""
        body = self.manifest(**spec)
        try:
            self.kube.create_identity(body)
        except KubeError as error:
            raise IdentityRefused(error.message) from None
        return self.credentials(body["metadata"]["name"], timeout=timeout)

    def credentials(self, name: str, *, timeout: float = 30.0) -> Credentials:
        identity = self.wait(name, timeout=timeout)
        status = identity.get("status") or {}
        if status.get("phase") != "Ready":
            raise IdentityRefused(f"{self.namespace}/{name} is {status.get('phase')}: {ready_message(identity)}")
        if not status.get("tokenSecretName"):
            raise IdentityRefused(
                f"{self.namespace}/{name} delivers its tokens only to its pods (spec.token.delivery: Projected):"
                " there is no token to hand out here"
            )
        secret = self.kube.get_child(ChildKind.TOKEN_SECRET, self.namespace, status["tokenSecretName"])
        data = decode_secret_data(secret or {})
        return Credentials(
            namespace=self.namespace,
            name=name,
            expires_at=parse_timestamp(status["expiresAt"]),
            delegation_chain=tuple(status.get("delegationChain") or ()),
            token=data["token"],
            kubeconfig=data["kubeconfig"],
            ca_cert=data["ca.crt"],
            assertion=data.get("assertion"),
        )

    def wait(self, name: str, *, timeout: float = 30.0) -> dict[str, Any]:
        """The identity once it has settled (Ready, Expired, Revoked or Denied) or Failed."""
        deadline = time.monotonic() + timeout
        while True:
            identity = self.kube.get_identity(self.namespace, name)
            if identity is None:
                raise IdentityRefused(f"{self.namespace}/{name} does not exist")
            if (identity.get("status") or {}).get("phase") in OUTCOME_PHASES:
                return identity
            if time.monotonic() > deadline:
                raise IdentityRefused(f"{self.namespace}/{name} not Ready after {timeout:.0f}s: {ready_message(identity)}")
            time.sleep(0.1)

    def revoke(self, name: str) -> bool:
        """Deletes the identity: its credentials are revoked at once, its delegates with it.
        False when it was already gone."""
        identity = self.kube.get_identity(self.namespace, name)
        if identity is None:
            return False
        self.kube.delete_identity(self.namespace, name, uid=identity["metadata"]["uid"])
        return True

    def done(self, name: str) -> None:
        """Sets spec.done on ``name`` with this client's credential: retired now, its delegates
        with it, and its record kept (unlike :meth:`revoke`) with reason SelfRetired."""
        retire_own(self.kube, namespace=self.namespace, name=name)

    def delegate(self, parent: Credentials, **spec: Any) -> Credentials:
        """Issues a child of ``parent``: its scopes must narrow the parent's, its life end before it."""
        return self.issue(delegator={"kind": "AgentIdentity", "name": parent.name}, **spec)

    @contextmanager
    def identity(self, **spec: Any) -> Iterator[Credentials]:
        """An identity for the duration of a ``with`` block, revoked when it exits."""
        credentials = self.issue(**spec)
        try:
            yield credentials
        finally:
            self.revoke(credentials.name)

    @contextmanager
    def delegated(self, parent: Credentials, **spec: Any) -> Iterator[Credentials]:
        credentials = self.delegate(parent, **spec)
        try:
            yield credentials
        finally:
            self.revoke(credentials.name)


def ready_message(identity: dict[str, Any]) -> str:
    conditions = (identity.get("status") or {}).get("conditions") or []
    ready = next((c for c in conditions if c.get("type") == "Ready"), None)
    return str(ready.get("message")) if ready else "no status yet"
