"""A pod floods the chart's webhooks with crafted AdmissionReviews while AgentIdentities are admitted.

The attack (issue 30, item 6): any pod that reaches the webhook Service (the default NetworkPolicy
admits any source) POSTs reviews of its own making, claiming ``system:masters`` under a new uid each
time, for the largest spec the chart's read-only profile allows, so no cached answer helps and each
would ask a SubjectAccessReview per permission atom. scripts/kind-e2e.sh gives the API server a
webhook client certificate and installs the chart with ``webhook.clientCA``: no crafted review is
ever answered, and genuine admissions keep their latency. The figures (dry-run creates through the
API server, one at a time, before and during the flood) go to the figures file.
"""

from __future__ import annotations

import json
import os
import statistics
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from kubernetes import client

from kind.release import Release
from support.cluster import GROUP, PLURAL, VERSION, wait_for
from support.tools import CHART

COUNT = int(os.environ.get("KIND_FLOOD_COUNT", "100"))  # genuine creates per phase
FLOOD_THREADS = 8
FLOOD_SECONDS = 40  # the flood pod's life: the flooded phase must end within it
CLIENT_AUTH = os.environ.get("AGENT_IDENTITY_KIND_CLIENT_AUTH", "1") != "0"

# Standard library only (the agent image's python3): crafted reviews from FLOOD_THREADS threads for
# FLOOD_SECONDS, a new connection after each failure; prints "flooding" once under way, then one
# JSON line of what happened to its requests.
FLOOD = r"""
import http.client, json, os, ssl, sys, threading, time, uuid
host, path, seconds, threads = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
identity = json.loads(os.environ["CRAFTED_IDENTITY"])
context = ssl.create_default_context()
context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
counts, lock, end = {}, threading.Lock(), time.monotonic() + seconds
def review():
    request = {
        "uid": str(uuid.uuid4()), "operation": "CREATE", "dryRun": True,
        "kind": {"group": "agentidentity.dev", "version": "v1alpha1", "kind": "AgentIdentity"},
        "resource": {"group": "agentidentity.dev", "version": "v1alpha1", "resource": "agentidentities"},
        "namespace": identity["metadata"]["namespace"], "name": identity["metadata"]["name"],
        "userInfo": {"username": "mallory", "uid": str(uuid.uuid4()), "groups": ["system:masters", "system:authenticated"]},
        "object": identity,
    }
    return json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}).encode()
def count(outcome):
    with lock:
        counts[outcome] = counts.get(outcome, 0) + 1
def send():
    while time.monotonic() < end:
        connection = http.client.HTTPSConnection(host, 443, context=context, timeout=10)
        try:
            while time.monotonic() < end:
                connection.request("POST", path, review(), {"Content-Type": "application/json"})
                response = connection.getresponse()
                response.read()
                count(str(response.status))
        except (OSError, http.client.HTTPException) as error:
            count(type(error).__name__)
        finally:
            connection.close()
workers = [threading.Thread(target=send) for _ in range(threads)]
for worker in workers:
    worker.start()
print("flooding", flush=True)
for worker in workers:
    worker.join()
print(json.dumps(counts, sort_keys=True), flush=True)
"""


def read_only_ceiling() -> list[dict[str, Any]]:
    """The chart's read-only profile's whole ceiling: the largest spec that profile admits."""
    reads = ["get", "list", "watch"]
    return [
        {"apiGroups": [""], "resources": ["configmaps", "events", "pods", "pods/log", "services"], "verbs": reads},
        {"apiGroups": ["apps", "batch"], "resources": ["deployments", "statefulsets", "jobs", "cronjobs"], "verbs": reads},
    ]


def flood_pod(name: str, image: str, release: Release, identity: dict[str, Any]) -> dict[str, Any]:
    host = f"{release.name}-webhook.{release.namespace}.svc"
    return {
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 1,
            "automountServiceAccountToken": False,  # it needs no credential: the webhook port is open to it
            "securityContext": {"runAsNonRoot": True, "runAsUser": 65532, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [
                {
                    "name": "flood",
                    "image": image,
                    "imagePullPolicy": "Never",
                    "command": ["python3", "-c", FLOOD, host, "/mutate-identity", str(FLOOD_SECONDS), str(FLOOD_THREADS)],
                    "env": [{"name": "CRAFTED_IDENTITY", "value": json.dumps(identity)}],
                    "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
                }
            ],
        },
    }


def timed_creates(release: Release, *, until: float | None = None) -> list[float]:
    """COUNT dry-run creates of the largest read-only spec, one at a time (stopping at ``until``,
    a monotonic deadline): each round trip's seconds; every one must be admitted."""
    custom = client.CustomObjectsApi(release.cluster.api_client)
    times = []
    for _ in range(COUNT):
        if until is not None and time.monotonic() >= until:
            break
        body = release.identity("flooded", scopes=read_only_ceiling())
        started = time.monotonic()
        custom.create_namespaced_custom_object(GROUP, VERSION, release.served, PLURAL, body, dry_run="All")
        times.append(time.monotonic() - started)
    return times


def figures_of(times: list[float]) -> dict[str, float]:
    ms = sorted(t * 1000 for t in times)
    return {"p50_ms": round(statistics.median(ms), 1), "p99_ms": round(ms[min(len(ms) - 1, int(len(ms) * 0.99))], 1)}


def summary(log: str | None) -> str | None:
    """The flood pod's last line, once it has printed it."""
    last = (log or "").strip().splitlines()[-1:]
    return last[0] if last and last[0].startswith("{") else None


@pytest.fixture
def image() -> str:
    name = os.environ.get("AGENT_IDENTITY_KIND_AGENT_IMAGE")
    assert name, "AGENT_IDENTITY_KIND_AGENT_IMAGE names the agent image loaded into the cluster (scripts/kind-e2e.sh sets it)"
    return name


@pytest.fixture
def pod_name(release: Release) -> Iterator[str]:
    name = f"flood-{uuid.uuid4().hex[:6]}"
    yield name
    release.cluster.core.delete_namespaced_pod(name, release.served, grace_period_seconds=0)


@dataclass(frozen=True)
class Flood:
    unflooded: list[float]  # genuine creates' round trips, seconds
    flooded: list[float]
    outcomes: dict[str, int]  # what happened to the flood's requests: HTTP status or error

    @property
    def answered(self) -> dict[str, int]:
        return {outcome: n for outcome, n in self.outcomes.items() if outcome.isdigit()}

    def figures(self, client_auth: bool) -> dict[str, Any]:
        return {
            "client_auth": client_auth,
            "flood_threads": FLOOD_THREADS,
            "unflooded": figures_of(self.unflooded),
            "flooded": figures_of(self.flooded),
            "flooded_creates": len(self.flooded),
            "flood_outcomes": self.outcomes,
        }


def flood(release: Release, image: str, pod_name: str) -> Flood:
    """Genuine creates unflooded, then while a pod floods the webhook Service."""
    core = release.cluster.core
    timed_creates(release)  # warm: connections, caches, the profile read
    unflooded = timed_creates(release)
    crafted = release.identity("crafted", scopes=read_only_ceiling())
    core.create_namespaced_pod(release.served, flood_pod(pod_name, image, release, crafted))

    def logged() -> str | None:
        pod = core.read_namespaced_pod(pod_name, release.served)
        if pod.status.phase in ("Pending", None):
            return None
        return core.read_namespaced_pod_log(pod_name, release.served) or None

    wait_for("the flood pod to start flooding", lambda: "flooding" in (logged() or "") or None, timeout=120)
    flood_ends = time.monotonic() + FLOOD_SECONDS - 5  # measured only while the flood surely runs
    flooded = timed_creates(release, until=flood_ends)
    log = wait_for("the flood pod's summary", lambda: summary(logged()), timeout=FLOOD_SECONDS + 60)
    result = Flood(unflooded=unflooded, flooded=flooded, outcomes=json.loads(log))
    assert len(flooded) >= COUNT // 4, f"only {len(flooded)} creates ran while the flood lasted"
    assert sum(result.outcomes.values()) > FLOOD_THREADS, f"the flood hardly ran: {result.outcomes}"
    return result


@pytest.fixture
def answering_any_client(release: Release, settled: list[str]) -> Iterator[None]:
    """The release upgraded to answer any client (webhook.clientCA unset, as on a managed control
    plane), rolled back afterwards."""
    release.helm("upgrade", release.name, str(CHART), "--reuse-values", "--set", "webhook.clientCA.configMap=", "--wait")
    release.wait_available()
    yield
    release.helm("rollback", release.name, "--wait", "--timeout", "300s")
    release.wait_available()


@pytest.mark.skipif(not CLIENT_AUTH, reason="the chart was installed without webhook.clientCA (KIND_CLIENT_AUTH=0)")
def test_a_pod_flooding_the_webhooks_is_never_answered_and_admissions_keep_their_latency(
    release: Release, settled: list[str], image: str, pod_name: str
) -> None:
    result = flood(release, image, pod_name)
    release.record("webhook_flood", result.figures(client_auth=True))
    assert not result.answered, f"the webhooks answered a pod's crafted reviews: {result.outcomes}"


def test_where_the_webhooks_answer_any_client_a_flooding_pod_takes_turns_and_no_admission_fails(
    release: Release, answering_any_client: None, image: str, pod_name: str
) -> None:
    """Without client certificates (managed control planes) the crafted reviews are answered, but
    in turns by peer: every genuine create is still admitted, none fails for a webhook timeout."""
    errors_before = release.webhook_call_errors()
    result = flood(release, image, pod_name)  # raises if a genuine create is refused
    release.record("webhook_flood_any_client", result.figures(client_auth=False))
    assert result.answered, f"no crafted review was answered: is the chart still requiring client certificates? {result.outcomes}"
    assert release.webhook_call_errors() == errors_before, "a genuine admission failed calling the webhooks during the flood"
