"""The chart's release on the kind cluster (see conftest.py) and what the tests ask of it."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from support.cluster import Cluster, make_identity, wait_for
from support.leases import holder
from support.tools import helm_binary


@dataclass(frozen=True)
class Release:
    """The chart's release on the kind cluster, and what the tests ask of it."""

    cluster: Cluster
    name: str
    namespace: str
    served: str  # a namespace the operator serves
    figures: Path | None

    @cached_property
    def apps(self) -> client.AppsV1Api:
        return client.AppsV1Api(self.cluster.api_client)

    @cached_property
    def creator(self) -> str:
        """Who the kubeconfig authenticates as: the webhook stamps this user as every creator."""
        review = client.AuthenticationV1Api(self.cluster.api_client).create_self_subject_review(
            {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
        )
        return str(review.status.user_info.username)

    def identity(self, stem: str, **changes: Any) -> dict[str, Any]:
        """An AgentIdentity in the served namespace under the chart's read-only profile, delegated
        by the creator (the profile requires a delegator)."""
        changes.setdefault("profile", "read-only")
        changes.setdefault("delegator", {"kind": "User", "name": self.creator})
        return make_identity(f"{stem}-{uuid.uuid4().hex[:6]}", self.served, **changes)

    def pods(self) -> list[Any]:
        selector = f"app.kubernetes.io/name=agent-identity-operator,app.kubernetes.io/instance={self.name}"
        return list(self.cluster.core.list_namespaced_pod(self.namespace, label_selector=selector).items)

    def leader(self) -> tuple[str, str]:
        """The Lease's holder identity (hostname-pid-random) and the pod it runs in."""
        identity = holder(self.cluster.api_client, self.namespace)
        assert identity, "nobody holds the Lease"
        pods = [p.metadata.name for p in self.pods() if identity.startswith(f"{p.metadata.name}-")]
        assert pods, f"the Lease holder {identity} is none of the operator pods"
        return identity, pods[0]

    def wait_available(self, timeout: float = 300.0) -> list[str]:
        """Waits until the Deployment is rolled out (every replica updated and Ready, no other pod
        left, stopping ones included) and one of its pods holds the Lease; returns the pod names."""

        def settled() -> list[str] | None:
            deployment = self.apps.read_namespaced_deployment(self.name, self.namespace)
            status, wanted = deployment.status, deployment.spec.replicas
            if (status.observed_generation or 0) < deployment.metadata.generation:
                return None
            if not status.updated_replicas == status.ready_replicas == status.available_replicas == status.replicas == wanted:
                return None
            pods = self.pods()
            if len(pods) != wanted or not all(is_ready(p) and not p.metadata.deletion_timestamp for p in pods):
                return None
            identity = holder(self.cluster.api_client, self.namespace)
            if not identity or not any(identity.startswith(f"{p.metadata.name}-") for p in pods):
                return None
            return sorted(p.metadata.name for p in pods)

        return wait_for(
            f"deployment {self.namespace}/{self.name} rolled out with a leader", settled, timeout=timeout, interval=0.5
        )

    def helm(self, *args: str, timeout: float = 600) -> str:
        result = subprocess.run(
            [helm_binary(), *args, "--namespace", self.namespace, "--kubeconfig", str(self.cluster.kubeconfig)],
            check=False,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert result.returncode == 0, f"helm {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
        return result.stdout

    def webhook_call_errors(self) -> int:
        """Admission requests the API server refused because calling one of the operator's webhooks
        failed (unreachable, timed out, no valid answer), since it started: its own counter
        ``apiserver_admission_webhook_rejection_count``, every error_type but no_error (a no_error
        rejection is the webhook answering "refused", which is policy, not an outage)."""
        api = self.cluster.api_client
        method, url, headers, _, _ = api.param_serialize("GET", "/metrics", auth_settings=["BearerToken"])
        response = api.call_api(method, url, header_params=headers)
        response.read()
        total = 0
        for line in response.data.decode().splitlines():
            if (
                line.startswith("apiserver_admission_webhook_rejection_count{")
                and '.agentidentity.dev"' in line
                and 'error_type="no_error"' not in line
            ):
                total += int(float(line.rsplit(" ", 1)[1]))
        return total

    def record(self, section: str, figures: dict[str, Any]) -> None:
        """Prints the figures of one test and merges them into the figures file."""
        print(f"\n[figures] {section}: " + ", ".join(f"{key}={value}" for key, value in figures.items()))
        if self.figures is None:
            return
        data = json.loads(self.figures.read_text()) if self.figures.exists() else {}
        data[section] = figures
        self.figures.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def is_ready(pod: Any) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in (pod.status.conditions or []))


def refusal(error: ApiException) -> str:
    """One line for a refused request: status and the API server's message."""
    try:
        message = json.loads(error.body or "{}").get("message", "")
    except ValueError:
        message = str(error.body)
    return f"{error.status} {error.reason}: {message}"


def create_until_admitted(cluster: Cluster, manifest: dict[str, Any], *, timeout: float = 30.0) -> list[str]:
    """Creates ``manifest``, again every 0.2 s while the API server refuses it; returns the refusals."""
    refusals: list[str] = []
    deadline = time.monotonic() + timeout
    while True:
        try:
            cluster.create_identity(manifest)
            return refusals
        except ApiException as error:
            if error.status == 409:  # an earlier attempt was stored after all
                return refusals
            refusals.append(refusal(error))
            if time.monotonic() > deadline:
                raise AssertionError(f"still refused after {timeout:.0f}s: {refusals}") from error
            time.sleep(0.2)
