"""The API server goes away and comes back: every background loop of the operator must come back
with it, and whatever changed while no watch was looking must be acted on.

Measured at the parent commit: a 20 s kube-apiserver outage left ``/readyz`` at 503 for good (the
prober thread died on a urllib3 error that is neither ``OSError`` nor ``KubeError``), and a child
deleted while the watches were down stayed deleted.
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.cluster import Cluster, http_status, local_plane, make_identity, wait_for
from support.operator_process import OperatorProcess
from support.webhooks import free_port

OUTAGE_S = 30 if os.environ.get("CHAOS_SCALE", "short") == "full" else 20


@pytest.fixture
def watched_operator(cluster: Cluster, namespace: str, tmp_path: Path) -> Iterator[tuple[OperatorProcess, str]]:
    local_plane(cluster, "it stops kube-apiserver and edits etcd behind its back")
    port = free_port()
    args = ["--http-port", str(port), "--http-listen", "127.0.0.1", "--signing-namespace", namespace, "--key-rotation", "20s"]
    process = OperatorProcess(kubeconfig=cluster.kubeconfig, namespace=namespace, log_dir=tmp_path, extra_args=args)
    process.start()
    base = f"http://127.0.0.1:{port}"
    wait_for("the operator ready", lambda: http_status(f"{base}/readyz") == 200, timeout=60)
    yield process, base
    process.stop()


def signing_kids(cluster: Cluster, namespace: str) -> set[str]:
    secret = cluster.core.read_namespaced_secret("agent-identity-signing-keys", namespace)
    return {key["kid"] for key in json.loads(base64.b64decode(secret.data["keys.json"]))}


def test_an_api_server_outage_heals_every_loop(
    cluster: Cluster, namespace: str, watched_operator: tuple[OperatorProcess, str]
) -> None:
    _, base = watched_operator
    assert cluster.plane is not None
    cluster.create_identity(make_identity("lapses", namespace, ttl="15s"))
    cluster.create_identity(make_identity("survives", namespace, ttl="10m"))
    for name in ("lapses", "survives"):
        cluster.wait_phase(namespace, name, "Ready")
    kids_before = signing_kids(cluster, namespace)

    cluster.plane.stop_component("kube-apiserver")
    stopped = time.monotonic()
    try:
        wait_for("/readyz to say the API server is gone", lambda: http_status(f"{base}/readyz") == 503, timeout=OUTAGE_S)
        # Behind the API server's back, while no watch can see it: the agent loses its RoleBinding
        # and token Secret, and the history is compacted away.
        cluster.plane.delete_from_etcd(f"/registry/rolebindings/{namespace}/aid-survives")
        cluster.plane.delete_from_etcd(f"/registry/secrets/{namespace}/aid-survives-token")
        cluster.plane.compact_etcd()
        time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - stopped)))  # the outage itself, not a synchronisation
        assert http_status(f"{base}/healthz") == 200, "a loop died during the outage"
    finally:
        restarted = time.monotonic()
        cluster.plane.start_component("kube-apiserver")  # returns once it is ready
    reached: dict[str, float] = {"kube-apiserver ready": time.monotonic() - restarted}

    def restored() -> bool:
        binding = cluster.call_status(lambda: cluster.rbac.read_namespaced_role_binding("aid-survives", namespace))
        secret = cluster.call_status(lambda: cluster.core.read_namespaced_secret("aid-survives-token", namespace))
        return binding == secret == 200

    milestones = {
        "/readyz 200 again": lambda: http_status(f"{base}/readyz") == 200,
        "the identity whose deadline passed during the outage Expired": lambda: cluster.phase(namespace, "lapses") == "Expired",
        "the RoleBinding and Secret deleted in the gap restored": restored,
    }

    def all_reached() -> bool:
        for what, probe in milestones.items():
            if what not in reached and probe():
                reached[what] = time.monotonic() - restarted
        return all(what in reached for what in milestones)

    try:
        wait_for("every milestone", all_reached, timeout=45, interval=0.2)
    except AssertionError:
        raise AssertionError(f"not every milestone was reached after the outage: only {sorted(reached)}") from None
    cluster.create_identity(make_identity("after", namespace, ttl="5m"))
    cluster.wait_phase(namespace, "after", "Ready", timeout=30)
    wait_for("key rotation resumed", lambda: signing_kids(cluster, namespace) - kids_before, timeout=60, interval=1)
    assert http_status(f"{base}/healthz") == 200
    print(
        f"\n{OUTAGE_S} s API server outage, after its restart: " + "; ".join(f"{what} {t:.1f} s" for what, t in reached.items())
    )
