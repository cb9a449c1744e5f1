"""The dead-man's switch (spec.heartbeat, #33 part 3) on a real API server, the webhooks really
called: an agent that renews its Lease lives on, one that stops is retired (HeartbeatLost) within a
period, its delegates with it; and the attacks: keeping a crashed agent's identity alive with
another agent's token, or as a user holding ``edit`` (which may write Leases: the pod guard lets
only the agent renew its own); deleting the Lease to reset the clock; a renewal in the future.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from agent_identity.kube.client import Kube
from agent_identity.sdk.client import IdentityRefused, heartbeat, renew_own
from support.cluster import GROUP, PLURAL, VERSION, Cluster, impersonated, impersonating, make_identity
from support.webhooks import served_with_people

pytestmark = pytest.mark.e2e

PERIOD = 10  # seconds: the shortest spec.heartbeat allowed


@dataclass
class Arena:
    cluster: Cluster
    namespace: str

    def ready(self, name: str, **spec: Any) -> dict[str, Any]:
        manifest = make_identity(name, self.namespace, **({"heartbeat": f"{PERIOD}s"} | spec))
        impersonating(self.cluster, "alice").create_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, manifest)
        return self.cluster.wait_phase(self.namespace, name, "Ready")

    def kube(self, name: str) -> Kube:
        configuration = client.Configuration()
        configuration.host, configuration.ssl_ca_cert = self.cluster.host, self.cluster.ca_file
        token = self.cluster.token_secret(self.namespace, name)["token"]
        configuration.api_key = {"authorization": f"Bearer {token}"}
        return Kube(configuration, pool_size=1)

    def lost(self, name: str, *, timeout: float = 2.5 * PERIOD) -> dict[str, Any]:
        body = self.cluster.wait_phase(self.namespace, name, "Expired", timeout=timeout)
        ready = {c["type"]: c for c in body["status"]["conditions"]}["Ready"]
        assert ready["reason"] == "HeartbeatLost", ready
        assert not any(self.cluster.children(self.namespace, name).values())
        return ready


@pytest.fixture(scope="module")
def arena(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Arena]:
    with served_with_people(cluster, tmp_path_factory.mktemp("beat"), "beat") as namespace:
        yield Arena(cluster, namespace)


def test_a_beating_agent_lives_and_a_silent_one_is_retired_within_a_period(arena: Arena) -> None:
    arena.ready("beating")
    arena.ready("beating-helper", delegator={"kind": "AgentIdentity", "name": "beating"}, ttl="5m", heartbeat=None)
    agent = arena.kube("beating")
    for _ in range(int(2.5 * PERIOD / 3)):  # longer than two periods, renewing every 3 s
        assert heartbeat(agent) == (arena.namespace, "beating")
        time.sleep(3)
    assert arena.cluster.phase(arena.namespace, "beating") == "Ready"
    stopped = time.monotonic()  # the agent "crashes": no more renewals
    ready = arena.lost("beating")
    assert time.monotonic() - stopped <= PERIOD + 3, "retired within one period (and the bench measures the lag)"
    assert "no renewal of aid-beating-heartbeat" in ready["message"]
    arena.cluster.wait_phase(arena.namespace, "beating-helper", "Expired")


def test_nobody_else_keeps_a_crashed_agents_identity_alive(arena: Arena) -> None:
    arena.ready("crashed")
    arena.ready("bystander")
    lease = "aid-crashed-heartbeat"
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    # Another agent's token (say, from another pod of the same namespace): its Role names its own Lease only.
    with pytest.raises(IdentityRefused, match="forbidden"):
        renew_own(arena.kube("bystander"), namespace=arena.namespace, name="crashed")
    # A user holding edit, from a pod of their own or not.
    leases = client.CoordinationV1Api(impersonated(arena.cluster, "mallory"))
    for patch in ({"spec": {"renewTime": now}}, {"spec": {"renewTime": "2030-01-01T00:00:00.000000Z"}}):
        with pytest.raises(ApiException) as refused:
            leases.patch_namespaced_lease(lease, arena.namespace, patch)
        assert refused.value.status in (403, 422) and "renewed only by its agent" in refused.value.body
    arena.lost("crashed")


def test_deleting_the_lease_retires_the_identity_it_never_resets_the_clock(arena: Arena) -> None:
    arena.ready("reset")
    client.CoordinationV1Api(arena.cluster.api_client).delete_namespaced_lease("aid-reset-heartbeat", arena.namespace)
    ready = arena.lost("reset", timeout=PERIOD)
    assert "was deleted" in ready["message"]


def test_an_identity_without_a_heartbeat_has_no_lease_and_no_right_to_one(arena: Arena) -> None:
    arena.ready("plain", heartbeat=None)
    with pytest.raises(IdentityRefused):
        heartbeat(arena.kube("plain"))
    role = arena.cluster.rbac.read_namespaced_role("aid-plain", arena.namespace)
    assert not any("leases" in (rule.resources or []) for rule in role.rules)


def test_a_renewal_claimed_in_the_future_does_not_stretch_the_period(arena: Arena) -> None:
    arena.ready("ahead")
    arena.kube("ahead").renew_lease(arena.namespace, "aid-ahead-heartbeat", renew_time="2030-01-01T00:00:00.000000Z")
    ready = arena.lost("ahead", timeout=2 * PERIOD)
    assert "in the future" in ready["message"]
