"""Beyond one replica: an active/standby pair on a Lease (failover measured), and shards by label."""

from __future__ import annotations

import time
from pathlib import Path

from kubernetes import client

from support.cluster import Cluster, make_identity, wait_for
from support.operator_process import OperatorProcess


def provisioned_by(operator: OperatorProcess) -> set[str]:
    return {line["name"] for line in operator.audit_lines() if line["action"] == "provisioned"}


def test_a_standby_takes_over_when_the_leader_dies(cluster: Cluster, namespace: str, tmp_path: Path) -> None:
    args = ["--leader-election", "--leader-election-namespace", namespace, "--lease-duration", "5s"]
    replicas = [
        OperatorProcess(kubeconfig=cluster.kubeconfig, namespace=namespace, log_dir=tmp_path / name, extra_args=args)
        for name in ("a", "b")
    ]
    coordination = client.CoordinationV1Api(cluster.api_client)
    for replica in replicas:
        replica.log_dir.mkdir()
        replica.start()
    try:
        holder = wait_for("a lease holder", lambda: _holder(coordination, namespace))
        leader = next(r for r in replicas if holder.endswith(f"-{r.process.pid}"))  # type: ignore[union-attr]
        standby = next(r for r in replicas if r is not leader)
        cluster.create_identity(make_identity("first", namespace))
        cluster.wait_phase(namespace, "first", "Ready")
        time.sleep(1)
        assert provisioned_by(leader) == {"first"} and provisioned_by(standby) == set()  # the standby only watched

        leader.kill()
        killed = time.monotonic()
        cluster.create_identity(make_identity("second", namespace))
        cluster.wait_phase(namespace, "second", "Ready", timeout=30)
        takeover = time.monotonic() - killed
        assert provisioned_by(standby) == {"second"}
        assert takeover < 5 + 2 + 5, f"takeover took {takeover:.1f}s"  # lease duration + retry period + slack
        print(f"\nfailover: standby provisioned an identity {takeover:.1f}s after the leader was killed (lease 5s)")
    finally:
        for replica in replicas:
            replica.stop()


def _holder(coordination: client.CoordinationV1Api, namespace: str) -> str | None:
    try:
        return coordination.read_namespaced_lease("agent-identity-operator", namespace).spec.holder_identity  # type: ignore[no-any-return]
    except client.ApiException:
        return None


def test_two_shards_split_the_work_by_label(cluster: Cluster, namespace: str, tmp_path: Path) -> None:
    shards = {
        name: OperatorProcess(
            kubeconfig=cluster.kubeconfig,
            namespace=namespace,
            log_dir=tmp_path / name,
            extra_args=["--shard-selector", f"shard={name}"],
        )
        for name in ("a", "b")
    }
    for shard in shards.values():
        shard.log_dir.mkdir()
        shard.start()
    try:
        time.sleep(2)
        names = {f"work-{i}": "ab"[i % 2] for i in range(10)}
        for name, shard in names.items():
            manifest = make_identity(name, namespace)
            manifest["metadata"]["labels"] = {"shard": shard}
            cluster.create_identity(manifest)
        for name in names:
            cluster.wait_phase(namespace, name, "Ready")
        split = {shard: provisioned_by(operator) for shard, operator in shards.items()}
        assert split["a"] == {n for n, s in names.items() if s == "a"}
        assert split["b"] == {n for n, s in names.items() if s == "b"}
        print(f"\nshards: a provisioned {len(split['a'])}, b provisioned {len(split['b'])}, no overlap")
    finally:
        for shard in shards.values():
            shard.stop()
