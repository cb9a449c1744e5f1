"""Runs the operator with its admission webhooks and registers them with the API server."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from kubernetes import client
from kubernetes.client.rest import ApiException

from agent_identity.admission import CONFIGURATION_NAME, webhook_configurations
from agent_identity.builders import ANNOTATION_CREATOR as CREATOR_ANNOTATION
from support.cluster import GROUP, PLURAL, VERSION, Cluster, make_identity
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
    _delete_configurations(registration)
    registration.create_mutating_webhook_configuration(mutating)
    registration.create_validating_webhook_configuration(validating)
    _wait_webhook(cluster, active=True)


def unregister(cluster: Cluster) -> None:
    """Removes both configurations and waits until the API server has stopped calling them."""
    if _delete_configurations(client.AdmissionregistrationV1Api(cluster.api_client)):
        _wait_webhook(cluster, active=False)


def _delete_configurations(registration: client.AdmissionregistrationV1Api) -> bool:
    deleted = False
    for delete in (registration.delete_mutating_webhook_configuration, registration.delete_validating_webhook_configuration):
        try:
            delete(CONFIGURATION_NAME)
            deleted = True
        except ApiException as error:
            if error.status != 404:
                raise
    return deleted


def _wait_webhook(cluster: Cluster, *, active: bool, timeout: float = 20.0) -> None:
    """The API server picks up webhook configurations asynchronously: probe with a dry-run create
    of a valid identity until the creator stamp of the mutating webhook appears (or is gone).
    A valid probe leaves no denial behind in anyone's metrics."""
    probe = make_identity(f"webhook-probe-{uuid.uuid4().hex[:6]}", "default")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        created = cluster.custom.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, probe, dry_run="All")
        stamped = CREATOR_ANNOTATION in ((created.get("metadata") or {}).get("annotations") or {})
        if stamped == active:
            time.sleep(0.3)  # the validating configuration arrives alongside the mutating one
            return
        time.sleep(0.1)
    raise AssertionError(f"the webhook did not become {'active' if active else 'inactive'} within {timeout:.0f}s")


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
        yield process
    finally:
        unregister(cluster)
        process.stop()
