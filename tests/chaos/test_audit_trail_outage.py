"""The audit trail's checkpoint loop through an API server outage: records written while the API
server is away stay in the chain, the loop keeps beating, and the first checkpoint after the
restart signs them all: the trail verifies with one writer and no gap."""

from __future__ import annotations

import json
import time
from pathlib import Path

from support.cluster import Cluster, http_status, local_plane, make_identity, wait_for
from support.operator_process import OperatorProcess
from support.trail import audit_verify, evidence, records, stored_head, trail_args
from support.webhooks import free_port

OUTAGE_S = 15


def test_the_checkpoint_loop_survives_an_api_server_outage_and_signs_what_came_meanwhile(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    local_plane(cluster, "it stops kube-apiserver")
    assert cluster.plane is not None
    port = free_port()
    audit_file = tmp_path / "audit.log"
    args = [*trail_args(namespace, audit_file), "--http-port", str(port), "--http-listen", "127.0.0.1"]
    operator = OperatorProcess(kubeconfig=cluster.kubeconfig, namespace=namespace, log_dir=tmp_path, extra_args=args)
    operator.start()
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for("the operator ready", lambda: http_status(f"{base}/readyz") == 200, timeout=60)
        cluster.create_identity(make_identity("lapses", namespace, ttl="12s"))
        cluster.wait_phase(namespace, "lapses", "Ready")
        wait_for("a checkpoint", lambda: "checkpoint" in records(audit_file)[-1])
        before = stored_head(cluster, namespace)["seq"]

        cluster.plane.stop_component("kube-apiserver")
        try:
            time.sleep(OUTAGE_S)  # the TTL lapses meanwhile; the expiry is recorded once the server is back
            assert http_status(f"{base}/healthz") == 200, "a loop died during the outage"
        finally:
            cluster.plane.start_component("kube-apiserver")
        cluster.wait_phase(namespace, "lapses", "Expired", timeout=60)
        wait_for(
            "the expiry checkpointed",
            lambda: stored_head(cluster, namespace)["seq"] > before and "checkpoint" in records(audit_file)[-1],
            timeout=60,
        )
    finally:
        operator.stop()

    chained = [line for line in records(audit_file) if "chain" in line]
    assert any(line["action"] == "expired" and line["name"] == "lapses" for line in chained)
    assert len({line["chain"]["writer"] for line in chained}) == 1
    assert [line["chain"]["seq"] for line in chained] == list(range(1, len(chained) + 1))
    jwks, stored = evidence(cluster, namespace, tmp_path)
    result = audit_verify(str(audit_file), "--jwks", str(jwks), "--checkpoint", str(stored), "-o", "json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["shards"][namespace] == {"records": len(chained), "signedUpTo": len(chained)}
    assert report["notes"] == []
