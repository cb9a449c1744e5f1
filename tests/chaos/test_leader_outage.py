"""Leader election through a kube-apiserver outage.

Measured at the parent commit with two replicas (--leader-election, 5 s lease): a 10 s outage
killed the leader-election thread in both replicas (a urllib3 error that is neither OSError nor
KubeError escaped it), so the lease was never renewed again and, once the leader was gone, no
replica ever served again.

Here the API server is frozen (SIGSTOP: requests hang rather than fail, the harder case: the
leader's renewal never returns), then thawed. The leader must stop at its renew deadline and exit
while the API server is still frozen; the standby, which never led, must survive and take over
once the API server is back.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

from agent_identity.engine.leader import EXIT_LEASE_LOST
from support.cluster import Cluster, local_plane, make_identity, wait_for
from support.leases import holder, holding, start_replicas
from support.operator_process import OperatorProcess

LEASE_S = 5
OUTAGE_S = 10


def test_the_leader_cut_off_exits_and_the_standby_serves_after_the_outage(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    apiserver = local_plane(cluster, "it freezes kube-apiserver (SIGSTOP)").processes["kube-apiserver"]
    replicas = start_replicas(cluster.kubeconfig, namespace, tmp_path, lease_s=LEASE_S)
    try:
        first_holder = wait_for("a lease holder", lambda: holder(cluster.api_client, namespace))
        leader = holding(first_holder, replicas)
        standby = next(r for r in replicas if r is not leader)
        cluster.create_identity(make_identity("before", namespace))
        cluster.wait_phase(namespace, "before", "Ready")

        apiserver.send_signal(signal.SIGSTOP)
        frozen = time.monotonic()
        try:
            code = leader.wait_exit(timeout=OUTAGE_S)  # while the API server is still frozen
            stopped = time.monotonic() - frozen
            time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - frozen)))
        finally:
            apiserver.send_signal(signal.SIGCONT)
        thawed = time.monotonic()
        assert code == EXIT_LEASE_LOST and "lost the lease" in leader.output()
        assert stopped < LEASE_S * 2 / 3 + 2, f"the leader stopped {stopped:.1f}s into the outage"

        wait_for("the standby to lead", lambda: holder(cluster.api_client, namespace) not in (None, first_holder), timeout=30)
        takeover = time.monotonic() - thawed
        assert standby.process is not None and standby.process.poll() is None  # it lived through the outage
        cluster.create_identity(make_identity("after", namespace))
        restarted: list[OperatorProcess] = []

        def served() -> bool:
            # Like a Deployment: a replica that exited (the old leader; or the new one, if its first
            # renewal ran past the renew deadline on an API server still catching up) is restarted.
            for replica in replicas:
                if replica.process is not None and replica.process.poll() is not None:
                    replica.start()
                    restarted.append(replica)
            return cluster.phase(namespace, "after") == "Ready"

        wait_for("the new identity Ready", served, timeout=60, interval=0.5)
        print(
            f"\nAPI server frozen {OUTAGE_S}s: the leader exited ({code}) {stopped:.1f}s in; the standby took the lease "
            f"{takeover:.1f}s after the API server came back (lease {LEASE_S}s); the new identity was provisioned "
            f"({len(restarted)} replica restarts, the old leader's included)"
        )
    finally:
        if apiserver.poll() is None:
            apiserver.send_signal(signal.SIGCONT)
        for replica in replicas:
            replica.stop()
