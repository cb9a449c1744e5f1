"""The heartbeat check (spec.heartbeat, #33 part 3) through an API server outage longer than the
period: nobody can renew a Lease while the API server is down, so the outage must not retire
anyone. The rule: a period counts only from the later of the last renewal and the moment the
operator found the API server reachable again (a watch resumed, or a read that failed succeeded).
After the restart each agent has a whole period to renew: the one that does lives on, the one
that does not is retired (HeartbeatLost) within a period, not before."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from agent_identity.kube.client import Kube, KubeError
from agent_identity.sdk.client import heartbeat
from support.cluster import Cluster, local_plane, make_identity, wait_for
from support.operator_process import OperatorProcess

PERIOD, OUTAGE_S = 10, 20


@pytest.fixture
def operator(cluster: Cluster, namespace: str, tmp_path: Path) -> Iterator[OperatorProcess]:
    local_plane(cluster, "it stops kube-apiserver")
    process = OperatorProcess(kubeconfig=cluster.kubeconfig, namespace=namespace, log_dir=tmp_path)
    process.start()
    yield process
    process.stop()


def agent_kube(cluster: Cluster, namespace: str, name: str) -> Kube:
    configuration = client.Configuration()
    configuration.host, configuration.ssl_ca_cert = cluster.host, cluster.ca_file
    configuration.api_key = {"authorization": f"Bearer {cluster.token_secret(namespace, name)['token']}"}
    return Kube(configuration, pool_size=1)


def test_an_api_server_outage_longer_than_the_period_retires_nobody(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    assert cluster.plane is not None
    for name in ("steady", "crashed"):
        cluster.create_identity(make_identity(name, namespace, heartbeat=f"{PERIOD}s"))
        cluster.wait_phase(namespace, name, "Ready")
    steady, crashed = agent_kube(cluster, namespace, "steady"), agent_kube(cluster, namespace, "crashed")
    heartbeat(steady), heartbeat(crashed)

    cluster.plane.stop_component("kube-apiserver")
    try:
        time.sleep(OUTAGE_S)  # two periods in which no agent can renew
        with pytest.raises(KubeError):
            heartbeat(steady)
    finally:
        cluster.plane.start_component("kube-apiserver")  # returns once it is ready
    restarted = time.monotonic()
    # The steady agent renews as soon as it can (a real one retries every few seconds).
    wait_for("the steady agent's renewal", lambda: _renewed(steady), timeout=PERIOD / 2, interval=0.5)
    beating = threading.Event()
    beating.set()

    def beat() -> None:  # the steady agent keeps beating every 2 s
        while beating.is_set():
            _renewed(steady)
            time.sleep(2)

    beater = threading.Thread(target=beat, daemon=True)
    beater.start()
    try:
        # Neither is retired by the outage: watched for most of a period after the restart.
        while time.monotonic() - restarted < PERIOD - 2:
            assert cluster.phase(namespace, "steady") == "Ready"
            assert cluster.phase(namespace, "crashed") == "Ready", "retired by the API server's outage, not by its agent"
            time.sleep(0.5)
        # The crashed one, silent since before the outage, goes within a period of the restart (plus the reconcile).
        body = cluster.wait_phase(namespace, "crashed", "Expired", timeout=PERIOD)
        assert {c["type"]: c for c in body["status"]["conditions"]}["Ready"]["reason"] == "HeartbeatLost"
        lag = time.monotonic() - restarted
        time.sleep(PERIOD)  # and the steady one, beating, lives on
        assert cluster.phase(namespace, "steady") == "Ready"
    finally:
        beating.clear()
        beater.join(timeout=10)
    print(f"\n{OUTAGE_S} s outage, {PERIOD} s heartbeat: the silent agent retired {lag:.1f} s after the restart")


def _renewed(kube: Kube) -> bool | None:
    try:
        heartbeat(kube)
    except Exception:  # noqa: BLE001 - the API server may still refuse for a moment after its restart
        return None
    return True
