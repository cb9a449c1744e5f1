"""Runs the operator with its admission webhooks and registers them with the API server."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from agent_identity.local.controlplane import free_port, listening, register_webhooks, unregister_webhooks
from support.cluster import Cluster
from support.operator_process import OperatorProcess


def wait_listening(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if listening(port):
            return
        time.sleep(0.1)
    raise AssertionError(f"the webhook server did not listen on {port}")


def register(cluster: Cluster, *, port: int, cert_dir: Path, exclude_namespace: str | None = None) -> None:
    register_webhooks(
        cluster.api_client,
        url=f"https://127.0.0.1:{port}",
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
    cert_dir = log_dir / "webhook-certs"
    process = OperatorProcess(
        kubeconfig=kubeconfig or cluster.kubeconfig,
        namespace=namespace,
        log_dir=log_dir,
        extra_args=["--webhook-port", str(port), "--webhook-cert-dir", str(cert_dir), *(extra_args or [])],
    )
    process.start()
    try:
        wait_listening(port)
        if registered:
            register(cluster, port=port, cert_dir=cert_dir, exclude_namespace=exclude_namespace)
        yield process
    finally:
        unregister(cluster)
        process.stop()
