"""`helm upgrade` and `helm rollback` while AgentIdentities are created every 0.2 s: each rolls
every operator pod (a new pod Ready before an old one stops, stopping pods served until routes
drop them), and no create is refused (failurePolicy Fail would refuse any create no replica
answers); every identity created turns Ready; identities and tokens from before both still work.
"""

from __future__ import annotations

import functools
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from kubernetes.client.rest import ApiException

from agent_identity import GROUP, PLURAL, VERSION
from kind.release import Release, refusal
from support.cluster import Cluster, wait_for
from support.tools import CHART

INTERVAL_S = 0.2
RUN_LABEL = "kind-e2e/run"
ROLLOUT_ANNOTATION = "kind-e2e/rollout"


@dataclass(frozen=True)
class Attempt:
    name: str
    at: float
    error: str | None


class CreateLoop(threading.Thread):
    """Creates an identity every INTERVAL_S with its own client, recording each attempt."""

    def __init__(self, release: Release, run: str) -> None:
        super().__init__(name="create-loop", daemon=True)
        self.release, self.run_id = release, run
        self.cluster = Cluster(kubeconfig=release.cluster.kubeconfig)
        self.attempts: list[Attempt] = []
        self.done = threading.Event()

    def run(self) -> None:
        next_at = time.monotonic()
        while not self.done.is_set():
            manifest = self.release.identity("load")
            manifest["metadata"]["labels"] = {RUN_LABEL: self.run_id}
            at, error = time.monotonic(), None
            try:
                self.cluster.create_identity(manifest)
            except ApiException as refused:
                error = refusal(refused)
            except OSError as failure:  # the API server itself unreachable: a refusal all the same
                error = repr(failure)
            self.attempts.append(Attempt(manifest["metadata"]["name"], at, error))
            next_at += INTERVAL_S
            self.done.wait(max(0.0, next_at - time.monotonic()))

    def stop(self) -> list[Attempt]:
        self.done.set()
        self.join(timeout=30)
        return self.attempts


def seconds_to_ready(identity: dict[str, Any]) -> float:
    created = datetime.fromisoformat(identity["metadata"]["creationTimestamp"])
    ready = next(c for c in identity["status"]["conditions"] if c["type"] == "Ready")
    return (datetime.fromisoformat(ready["lastTransitionTime"]) - created).total_seconds()


def test_helm_upgrade_and_rollback_refuse_no_create_and_keep_every_identity(release: Release, settled: list[str]) -> None:
    cluster, namespace = release.cluster, release.served
    run = uuid.uuid4().hex[:6]
    assert release.creator  # asked once here (it is cached), not from the loop's thread

    # Identities (and their tokens) from before the upgrade.
    survivors: dict[str, dict[str, Any]] = {}
    for _ in range(2):
        manifest = release.identity("survivor")
        manifest["metadata"]["labels"] = {RUN_LABEL: run}
        cluster.create_identity(manifest)
        name = manifest["metadata"]["name"]
        ready = cluster.wait_phase(namespace, name, "Ready", timeout=60)
        token = cluster.token_secret(namespace, name)["token"]
        assert cluster.token_review(token)["authenticated"]
        survivors[name] = {"token": token, "serviceAccountUID": ready["status"]["serviceAccountUID"]}

    errors_before = release.webhook_call_errors()
    loop = CreateLoop(release, run)
    loop_started = time.monotonic()
    loop.start()
    try:
        time.sleep(2)
        started = time.monotonic()
        release.helm(
            "upgrade", release.name, str(CHART), "--reuse-values",
            "--set-string", f"podAnnotations.{ROLLOUT_ANNOTATION}={run}", "--wait", "--timeout", "300s",
        )  # fmt: skip
        upgraded = release.wait_available()
        upgrade_s = time.monotonic() - started
        assert not set(upgraded) & set(settled), f"the upgrade left pods in place: {upgraded} after {settled}"

        started = time.monotonic()
        release.helm("rollback", release.name, "--wait", "--timeout", "300s")
        rolled_back = release.wait_available()
        rollback_s = time.monotonic() - started
        assert not set(rolled_back) & set(upgraded), f"the rollback left pods in place: {rolled_back} after {upgraded}"
        assert not any(ROLLOUT_ANNOTATION in (p.metadata.annotations or {}) for p in release.pods())
        time.sleep(3)  # the last stopped pods are gone: keep creating a moment longer
    finally:
        attempts = loop.stop()
    try:
        refused = [a for a in attempts if a.error]
        call_errors = release.webhook_call_errors() - errors_before
        created = [a.name for a in attempts if not a.error]

        def all_ready() -> list[dict[str, Any]] | None:
            listed = cluster.custom.list_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, label_selector=f"{RUN_LABEL}={run}"
            )["items"]
            ours = [i for i in listed if i["metadata"]["name"] in created]
            ready = [i for i in ours if (i.get("status") or {}).get("phase") == "Ready"]
            return ready if len(ready) == len(created) else None

        settled_identities = wait_for(
            f"all {len(created)} identities created during the rollouts to be Ready", all_ready, timeout=300, interval=1
        )
        slowest = max(seconds_to_ready(i) for i in settled_identities)

        changed_tokens = 0
        for name, before in survivors.items():
            identity = cluster.get_identity(namespace, name)
            assert identity and identity["status"]["phase"] == "Ready", f"{name} did not survive: {identity}"
            assert identity["status"]["serviceAccountUID"] == before["serviceAccountUID"], f"{name} was provisioned anew"
            review = cluster.token_review(before["token"])
            assert review["authenticated"], f"the token {name} held before the upgrade was refused: {review}"
            agent = cluster.as_token(before["token"])
            assert cluster.call_status(functools.partial(agent.list_namespaced_config_map, namespace)) == 200
            changed_tokens += cluster.token_secret(namespace, name)["token"] != before["token"]

        release.record(
            "upgrade_rollback",
            {
                "creates": len(attempts),
                "refused_creates": len(refused),
                "webhook_call_errors_counted_by_api_server": call_errors,
                "upgrade_s": round(upgrade_s, 1),
                "rollback_s": round(rollback_s, 1),
                "slowest_create_to_ready_s": slowest,
                "survivors_token_secrets_rewritten": changed_tokens,
                "refusals": [f"+{a.at - loop_started:.1f}s {a.error}" for a in refused][:10],
            },
        )
        assert refused == [], f"{len(refused)} of {len(attempts)} creates refused, e.g. {refused[:3]}"
        assert call_errors == 0, f"the API server counted {call_errors} failed calls to the operator's webhooks"
    finally:
        cluster.custom.delete_collection_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, label_selector=f"{RUN_LABEL}={run}"
        )
