"""Beyond one replica: an active/standby pair on a Lease (failover measured), and shards by label."""

from __future__ import annotations

import signal
import time
from datetime import datetime
from pathlib import Path

from agent_identity.engine.leader import EXIT_LEASE_LOST
from support.cluster import Cluster, audit_log, http_get, http_status, make_identity, wait_for
from support.leases import audited_writes, holder, holding, lease, start_replicas
from support.operator_process import OperatorProcess
from support.webhooks import free_port

LEASE_S = 5
COLD_STANDBY = b"a standby whose first listing of the identities is still running"


def logged_at(replica: OperatorProcess, words: str) -> datetime:
    """When ``replica`` last logged ``words`` (its log's timestamps: this host's clock)."""
    line = [line for line in replica.output().splitlines() if words in line][-1]
    return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")


def provisioned_by(operator: OperatorProcess) -> set[str]:
    return {line["name"] for line in operator.audit_lines() if line["action"] == "provisioned"}


def test_a_standby_takes_over_when_the_leader_dies(cluster: Cluster, namespace: str, tmp_path: Path) -> None:
    replicas = start_replicas(cluster.kubeconfig, namespace, tmp_path, lease_s=LEASE_S)
    try:
        leader = holding(wait_for("a lease holder", lambda: holder(cluster.api_client, namespace)), replicas)
        standby = next(r for r in replicas if r is not leader)
        cluster.create_identity(make_identity("first", namespace))
        cluster.wait_phase(namespace, "first", "Ready")
        wait_for("the leader's audit line for first", lambda: "first" in provisioned_by(leader))
        assert provisioned_by(leader) == {"first"} and provisioned_by(standby) == set()  # the standby only watched

        leader.kill()
        killed = time.monotonic()
        cluster.create_identity(make_identity("second", namespace))
        cluster.wait_phase(namespace, "second", "Ready", timeout=30)
        takeover = time.monotonic() - killed
        wait_for("the standby's audit line for second", lambda: "second" in provisioned_by(standby))
        assert provisioned_by(standby) == {"second"}
        assert takeover < LEASE_S + 1 + 5, f"takeover took {takeover:.1f}s"  # lease duration + retry period + slack
        print(f"\nfailover: standby provisioned an identity {takeover:.1f}s after the leader was killed (lease {LEASE_S}s)")
    finally:
        for replica in replicas:
            replica.stop()


def test_a_frozen_leader_is_replaced_and_never_writes_again(cluster: Cluster, namespace: str, tmp_path: Path) -> None:
    """SIGSTOP the leader past its lease: the standby takes over and works; SIGCONT: the old leader
    makes no write (as the API server's audit log tells, one ServiceAccount per replica) and exits."""
    log = audit_log(cluster, "it counts each replica's writes")
    names = ("a", "b")
    for name in names:
        cluster.core.create_namespaced_service_account(namespace, {"metadata": {"name": f"replica-{name}"}})
    binding = f"{namespace}-replicas"
    cluster.rbac.create_cluster_role_binding(
        {
            "metadata": {"name": binding},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
            "subjects": [{"kind": "ServiceAccount", "name": f"replica-{n}", "namespace": namespace} for n in names],
        }
    )
    args = ["--leader-election", "--leader-election-namespace", namespace, "--lease-duration", f"{LEASE_S}s"]
    replicas = {
        name: OperatorProcess(
            kubeconfig=cluster.service_account_kubeconfig(namespace, f"replica-{name}", tmp_path / f"{name}.kubeconfig"),
            namespace=namespace,
            log_dir=tmp_path / name,
            extra_args=args,
        )
        for name in names
    }
    user = {r: f"system:serviceaccount:{namespace}:replica-{name}" for name, r in replicas.items()}
    for replica in replicas.values():
        replica.log_dir.mkdir()
        replica.start()
    try:
        first_holder = wait_for("a lease holder", lambda: holder(cluster.api_client, namespace))
        leader = holding(first_holder, replicas.values())
        standby = next(r for r in replicas.values() if r is not leader)
        cluster.create_identity(make_identity("first", namespace))
        cluster.wait_phase(namespace, "first", "Ready")
        # Its audit line comes right after the Ready status it wrote: frozen before it, the leader
        # would never write it (it exits on waking without the lease).
        wait_for("the leader's audit line for first", lambda: "first" in provisioned_by(leader))

        assert leader.process is not None
        leader.process.send_signal(signal.SIGSTOP)
        frozen = time.monotonic()
        try:
            wait_for(
                "the standby to take the lease", lambda: holder(cluster.api_client, namespace) != first_holder, interval=0.05
            )
            takeover = time.monotonic() - frozen
            taken = lease(cluster.api_client, namespace)
            assert holding(taken.holder_identity, replicas.values()) is standby and taken.lease_transitions == 1
            taken_at: datetime = taken.acquire_time
            after = [f"after-{i}" for i in range(3)]
            for name in after:
                cluster.create_identity(make_identity(name, namespace))
            for name in after:
                cluster.wait_phase(namespace, name, "Ready")
            working = time.monotonic() - frozen
        finally:
            leader.process.send_signal(signal.SIGCONT)
        code = leader.wait_exit(timeout=20)
        assert code == EXIT_LEASE_LOST and "lost the lease" in leader.output()
        time.sleep(1)  # anything it sent on its way out reaches the audit log

        writes = audited_writes(log)
        old_before = [w for w in writes if w.user == user[leader] and w.received < taken_at]
        old_after = [w for w in writes if w.user == user[leader] and w.received >= taken_at]
        new_after = [w for w in writes if w.user == user[standby] and w.received >= taken_at]
        assert old_before, "the leader's writes are in the audit log while it led"
        assert old_after == [], f"the old leader wrote after the takeover: {old_after}"
        assert any(w.what == "leases/agent-identity-operator" for w in new_after)
        assert provisioned_by(standby) >= set(after) and provisioned_by(leader) == {"first"}
        retry = LEASE_S * 2 / 15
        assert LEASE_S - retry - 0.5 < takeover < LEASE_S + 2 * retry + 3, f"takeover took {takeover:.1f}s"
        print(
            f"\nfrozen leader: the standby took the lease {takeover:.1f}s after SIGSTOP (lease {LEASE_S}s) and had 3 new "
            f"identities Ready {working:.1f}s after SIGSTOP; the old leader wrote {len(old_before)} times before the takeover, "
            f"0 after, and exited with {code} when thawed; the new leader wrote {len(new_after)} times"
        )
    finally:
        for replica in replicas.values():
            if replica.process and replica.process.poll() is None:
                replica.process.send_signal(signal.SIGCONT)  # a frozen process would not hear SIGTERM
            replica.stop()
        cluster.rbac.delete_cluster_role_binding(binding)


def test_a_free_lease_goes_to_a_standby_whose_cache_is_full(cluster: Cluster, namespace: str, tmp_path: Path) -> None:
    """A rolling update at scale: a new replica whose first listing is still running (held two
    minutes by a fault point) competes with a warm standby each time the leader stops and
    releases the lease. Three rounds: the warm one takes over every time (a coin toss each, were
    the cold one not to defer). Then, with no warm replica left, the cold one leads after all, and
    works while its listing still runs. It is not ready while it stands by cold (a rolling update
    waits for it before stopping anyone), and ready once it leads. With client-go's 15 s lease
    (a 2 s retry period), each hand-over takes one watch event of the Lease, not a retry."""
    lease_s = 15
    replicas = start_replicas(cluster.kubeconfig, namespace, tmp_path, lease_s=lease_s)
    port = free_port()
    cold = OperatorProcess(
        kubeconfig=cluster.kubeconfig,
        namespace=namespace,
        log_dir=tmp_path / "cold",
        extra_args=[
            *("--leader-election", "--leader-election-namespace", namespace, "--lease-duration", f"{lease_s}s"),
            *("--http-port", str(port), "--http-listen", "127.0.0.1"),
        ],
    )
    readyz = f"http://127.0.0.1:{port}/readyz"
    cold.log_dir.mkdir()

    def listed(replica: OperatorProcess) -> bool:  # its latest run has listed every identity
        return replica.output().count(f"listed {namespace}:") >= replica.runs

    cluster.create_identity(make_identity("first", namespace))
    cluster.wait_phase(namespace, "first", "Ready")
    try:
        wait_for("both replicas listed", lambda: all(listed(r) for r in replicas))
        cold.start(failpoint="listing-page=sleep(120)")
        wait_for("the cold replica standing by", lambda: "standing by" in cold.output())
        # Alive, and not ready, for that reason: a rolling update waits for its cache.
        wait_for("the cold standby held back", lambda: http_get(readyz) == (503, b"not ready: " + COLD_STANDBY))
        assert b"\nagentidentity_cache_complete 0.0\n" in http_get(f"http://127.0.0.1:{port}/metrics")[1]
        hand_overs: list[float] = []
        for _ in range(3):
            leader = holding(wait_for("a lease holder", lambda: holder(cluster.api_client, namespace)), [*replicas, cold])
            assert leader is not cold
            warm = next(r for r in replicas if r is not leader)
            leader.stop()  # SIGTERM: it releases the lease
            successor = holding(wait_for("a new holder", lambda: holder(cluster.api_client, namespace)), [*replicas, cold])
            assert successor is warm, "a replica still listing took the lease from a warm standby"
            released, acquired = logged_at(leader, "released the lease"), logged_at(successor, "acquired the lease")
            hand_overs.append((acquired - released).total_seconds())
            leader.start()  # the next round's warm standby, once it has listed
            wait_for("the restarted replica listed", lambda: listed(leader))  # noqa: B023
        assert not listed(cold)
        assert max(hand_overs) < 1.0, f"hand-overs took {hand_overs} s: a retry period, not a watch event"
        for replica in replicas:
            replica.stop()
        holding(wait_for("the cold replica leading", lambda: holder(cluster.api_client, namespace)), [cold])
        assert "cache is still filling" in cold.output()
        cluster.create_identity(make_identity("second", namespace))
        cluster.wait_phase(namespace, "second", "Ready", timeout=30)
        wait_for("the cold leader's audit line for second", lambda: "second" in provisioned_by(cold))
        assert provisioned_by(cold) == {"second"} and not listed(cold)
        assert http_status(readyz) == 200  # it leads: it serves
        print(f"\nrolling update, warm standby first: hand-overs of {', '.join(f'{s:.2f}' for s in hand_overs)} s")
    finally:
        for replica in [*replicas, cold]:
            replica.stop()


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
        names = {f"work-{i}": "ab"[i % 2] for i in range(10)}
        for name, shard in names.items():
            manifest = make_identity(name, namespace)
            manifest["metadata"]["labels"] = {"shard": shard}
            cluster.create_identity(manifest)
        for name in names:
            cluster.wait_phase(namespace, name, "Ready")
        wait_for("every audit line", lambda: set().union(*map(provisioned_by, shards.values())) >= names.keys())
        split = {shard: provisioned_by(operator) for shard, operator in shards.items()}
        assert split["a"] == {n for n, s in names.items() if s == "a"}
        assert split["b"] == {n for n, s in names.items() if s == "b"}
        print(f"\nshards: a provisioned {len(split['a'])}, b provisioned {len(split['b'])}, no overlap")
    finally:
        for shard in shards.values():
            shard.stop()
