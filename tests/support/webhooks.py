"""Runs the operator with its admission webhooks and registers them with the API server.

The API server calls the webhooks of an operator that runs on this machine (a test's child
process): at ``https://<WEBHOOK_HOST>:<port>``. On the local control plane that is loopback; on a
cluster whose API server runs elsewhere (kind: in the node container), ``AGENT_IDENTITY_WEBHOOK_HOST``
names this machine as that API server reaches it (for kind, the gateway of the docker network
``kind``). The operator listens on that address and puts it in its serving certificate.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from agent_identity.local.controlplane import free_port, register_webhooks, unregister_webhooks
from support.cluster import GROUP, PLURAL, Cluster
from support.operator_process import OperatorProcess

WEBHOOK_HOST = os.environ.get("AGENT_IDENTITY_WEBHOOK_HOST") or "127.0.0.1"


def webhook_url(port: int, path: str = "") -> str:
    """Where the API server calls an operator of this machine that serves its webhooks on ``port``."""
    host = f"[{WEBHOOK_HOST}]" if ":" in WEBHOOK_HOST else WEBHOOK_HOST  # an IPv6 address
    return f"https://{host}:{port}{path}"


def webhook_args(port: int, cert_dir: Path) -> list[str]:
    """The operator's flags to serve its webhooks on ``port`` at WEBHOOK_HOST, certificates in ``cert_dir``."""
    return ["--webhook-port", str(port), "--webhook-cert-dir", str(cert_dir), "--webhook-host", WEBHOOK_HOST]


def listening(port: int) -> bool:
    """Something accepts connections on ``port`` at WEBHOOK_HOST."""
    with socket.socket(socket.AF_INET6 if ":" in WEBHOOK_HOST else socket.AF_INET) as sock:
        return sock.connect_ex((WEBHOOK_HOST, port)) == 0


def wait_listening(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if listening(port):
            return
        time.sleep(0.1)
    raise AssertionError(f"the webhook server did not listen on {WEBHOOK_HOST}:{port}")


def register(cluster: Cluster, *, port: int, cert_dir: Path, exclude_namespace: str | None = None) -> None:
    register_webhooks(
        cluster.api_client,
        url=webhook_url(port),
        ca_bundle=(cert_dir / "ca.crt").read_bytes(),
        exclude_namespace=exclude_namespace,
    )


def register_again(cluster: Cluster, operator: OperatorProcess, *, exclude_namespace: str | None = None) -> None:
    """Registers the webhooks of a running ``operator_with_webhooks`` process again."""
    port = int(operator.extra_args[operator.extra_args.index("--webhook-port") + 1])
    cert_dir = Path(operator.extra_args[operator.extra_args.index("--webhook-cert-dir") + 1])
    wait_listening(port)
    register(cluster, port=port, cert_dir=cert_dir, exclude_namespace=exclude_namespace)


def unregister(cluster: Cluster) -> None:
    unregister_webhooks(cluster.api_client)


@contextmanager
def operator_with_webhooks(
    cluster: Cluster,
    namespace: str,
    log_dir: Path,
    *,
    registered: bool = True,
    extra_args: list[str] | None = None,
    kubeconfig: Path | None = None,
    exclude_namespace: str | None = None,
) -> Iterator[OperatorProcess]:
    """The operator serving ``namespace`` with its webhooks registered (as ``kubeconfig``'s user,
    the admin by default)."""
    port = free_port()
    process = OperatorProcess(
        kubeconfig=kubeconfig or cluster.kubeconfig,
        namespace=namespace,
        log_dir=log_dir,
        extra_args=[*webhook_args(port, log_dir / "webhook-certs"), *(extra_args or [])],
    )
    process.start()
    try:
        wait_listening(port)
        if registered:
            register(cluster, port=port, cert_dir=log_dir / "webhook-certs", exclude_namespace=exclude_namespace)
        yield process
    finally:
        unregister(cluster)
        process.stop()


# What alice and mallory hold in a served namespace beside the built-in edit role: ConfigMaps to
# read (so they may hand agents that scope) and AgentIdentities to manage.
PEOPLE_RIGHTS = [
    {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]},
    {"apiGroups": [GROUP], "resources": [PLURAL], "verbs": ["create", "get", "list", "patch", "delete"]},
]


@contextmanager
def served_with_people(cluster: Cluster, log_dir: Path, stem: str) -> Iterator[str]:
    """A namespace ``<stem>-*`` served by an operator with its webhooks (and its own namespace apart),
    where alice and mallory hold ``edit`` and PEOPLE_RIGHTS; both namespaces deleted afterwards."""
    suffix = uuid.uuid4().hex[:5]
    namespace, own = cluster.create_test_namespace(f"{stem}-{suffix}"), cluster.create_test_namespace(f"{stem}-op-{suffix}")
    for user in ("alice", "mallory"):
        cluster.grant(namespace, user, PEOPLE_RIGHTS)
        cluster.bind_cluster_role(namespace, user, "edit")
    with operator_with_webhooks(cluster, namespace, log_dir, extra_args=["--operator-namespace", own], exclude_namespace=own):
        yield namespace
    for ns in (namespace, own):
        cluster.delete_namespace(ns)
