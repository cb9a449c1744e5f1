"""Runs the operator with its admission webhooks and registers them with the API server."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from kubernetes import client
from kubernetes.client.rest import ApiException

from agent_identity.admission import CONFIGURATION_NAME, webhook_configurations
from support.cluster import Cluster
from support.operator_process import OperatorProcess


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_listening(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError(f"the webhook server did not listen on {port}")


def register(cluster: Cluster, *, port: int, cert_dir: Path) -> None:
    registration = client.AdmissionregistrationV1Api(cluster.api_client)
    mutating, validating = webhook_configurations(ca_bundle=(cert_dir / "ca.crt").read_bytes(), url=f"https://127.0.0.1:{port}")
    unregister(cluster)
    registration.create_mutating_webhook_configuration(mutating)
    registration.create_validating_webhook_configuration(validating)


def unregister(cluster: Cluster) -> None:
    registration = client.AdmissionregistrationV1Api(cluster.api_client)
    for delete in (registration.delete_mutating_webhook_configuration, registration.delete_validating_webhook_configuration):
        try:
            delete(CONFIGURATION_NAME)
        except ApiException as error:
            if error.status != 404:
                raise


@contextmanager
def operator_with_webhooks(
    cluster: Cluster,
    namespace: str,
    log_dir: Path,
    *,
    registered: bool = True,
    extra_args: list[str] | None = None,
    kubeconfig: Path | None = None,
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
            register(cluster, port=port, cert_dir=cert_dir)
            time.sleep(0.5)  # the API server picks up new webhook configurations asynchronously
        yield process
    finally:
        unregister(cluster)
        process.stop()
