"""Deleting the leader pod: the standby, which has watched everything all along, takes the Lease
over within the lease duration plus a retry period, and an AgentIdentity created right after the
delete is admitted by the standby's webhooks and turns Ready once it leads.

The pod is deleted with grace period 0, as a crash or a lost node would end it: no clean
shutdown, the Lease left to expire (a graceful delete adds the chart's shutdownDelaySeconds, during
which the old leader keeps leading). The kubelet still gives a force-deleted container its minimum
grace of about 2 s, in which the old leader may still renew and reconcile: an identity created
right after the delete can be made Ready by it. A second one, created once that grace is over,
waits for the new leader, and shows the gap a lost leader leaves.
"""

from __future__ import annotations

import time
from typing import Any

from kind.release import Release, create_until_admitted
from support.leases import lease

# Beyond lease duration + 2 s: the kubelet's ~2 s minimum grace of a force-deleted pod (the old
# leader may renew in it), the standby seeing the last renewal up to one retry period (2 s) late,
# and this test's polling.
SLACK_S = 5.0
KUBELET_GRACE_S = 2.0  # what the kubelet still gives a container whose pod was deleted with grace 0


def test_deleting_the_leader_pod_hands_over_within_the_lease_duration(release: Release, settled: list[str]) -> None:
    cluster = release.cluster
    before = lease(cluster.api_client, release.namespace)
    duration = float(before.lease_duration_seconds)
    old_identity, old_pod = release.leader()
    manifest = release.identity("handover")
    name = manifest["metadata"]["name"]

    deleted_at = time.monotonic()
    cluster.core.delete_namespaced_pod(old_pod, release.namespace, grace_period_seconds=0)
    refusals = create_until_admitted(cluster, manifest)
    admitted_after = time.monotonic() - deleted_at
    # One more once the old leader's last grace is surely over: it waits for the new leader.
    leaderless = release.identity("leaderless")
    leaderless_after: float | None = None
    names = [name, leaderless["metadata"]["name"]]

    last_renewal = before.renew_time  # the old leader's last renewal as written in the Lease
    new: Any = None
    new_after: float | None = None
    ready_after: dict[str, float] = {}
    deadline = deleted_at + duration + 90
    while (new is None or len(ready_after) < len(names)) and time.monotonic() < deadline:
        if leaderless_after is None and time.monotonic() > deleted_at + KUBELET_GRACE_S + 1:
            refusals += create_until_admitted(cluster, leaderless)
            leaderless_after = time.monotonic() - deleted_at
        spec = lease(cluster.api_client, release.namespace)
        if new is None and spec is not None:
            if spec.holder_identity == old_identity:
                last_renewal = spec.renew_time
            elif spec.holder_identity:
                new, new_after = spec, time.monotonic() - deleted_at
        for each in names:
            if each not in ready_after and cluster.phase(release.served, each) == "Ready":
                ready_after[each] = time.monotonic() - deleted_at
        time.sleep(0.1)
    try:
        assert new is not None and new_after is not None, f"nobody took the Lease over from {old_identity}"
        assert set(ready_after) == set(names), f"created after the delete, never Ready: {set(names) - set(ready_after)}"
        assert leaderless_after is not None
        assert not new.holder_identity.startswith(f"{old_pod}-")
        release.record(
            "handover",
            {
                "lease_duration_s": duration,
                "delete_to_new_holder_s": round(new_after, 2),
                "last_renewal_to_new_holder_s": round((new.acquire_time - last_renewal).total_seconds(), 2),
                "identity_created_at_s": round(admitted_after, 2),
                "identity_ready_at_s": round(ready_after[names[0]], 2),
                "leaderless_identity_created_at_s": round(leaderless_after, 2),
                "leaderless_identity_ready_at_s": round(ready_after[names[1]], 2),
                "refused_creates_after_delete": len(refusals),
                "refusals": refusals,
            },
        )
        assert new_after <= duration + 2 + SLACK_S, f"handover took {new_after:.1f}s, lease duration {duration:.0f}s"
    finally:
        for each in names:
            cluster.delete_identity(release.served, each)
