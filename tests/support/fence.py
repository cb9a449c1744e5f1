"""The chart's fence (a ValidatingAdmissionPolicy that bounds what the operator's own ServiceAccount
may write) on the test cluster: rendered by the pinned Helm, installed, waited for, removed.

The API server loads admission policies asynchronously, so installing one is not enough: a test
that runs the operator "under the fence" first waits until the fence refuses a probe, a dry-run
create of a Secret the operator may not write (nothing is stored, whatever the answer)."""

from __future__ import annotations

import time
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from support.cluster import Cluster
from support.tools import render_chart

KINDS = ("ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding")
PROBE_SECRET = "fence-probe"  # not aid-*: the fence refuses it


def fence_objects(*, release: str, namespace: str, args: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """The fence policy and its binding for the operator ServiceAccount of ``release`` in ``namespace``."""
    objects = [o for o in render_chart(*args, release=release, namespace=namespace) if is_fence(o)]
    assert [o["kind"] for o in objects] == list(KINDS), "the chart renders no fence (fence.enabled?)"
    return objects


def is_fence(obj: dict[str, Any]) -> bool:
    """The fence's policy or binding (the chart's other policy is the pod guard)."""
    return obj["kind"] in KINDS and str(obj["metadata"]["name"]).endswith("-fence")


def install(cluster: Cluster, objects: list[dict[str, Any]]) -> None:
    """Creates the policy, then its binding (replacing leftovers of an interrupted run)."""
    remove(cluster, objects)
    registration = client.AdmissionregistrationV1Api(cluster.api_client)
    for obj in objects:
        if obj["kind"] == "ValidatingAdmissionPolicy":
            registration.create_validating_admission_policy(obj)
        else:
            registration.create_validating_admission_policy_binding(obj)


def remove(cluster: Cluster, objects: list[dict[str, Any]]) -> None:
    """Deletes the binding and the policy (cluster-scoped: nothing else cleans them up)."""
    registration = client.AdmissionregistrationV1Api(cluster.api_client)
    for obj in sorted(objects, key=lambda o: o["kind"] != "ValidatingAdmissionPolicyBinding"):
        delete = (
            registration.delete_validating_admission_policy_binding
            if obj["kind"] == "ValidatingAdmissionPolicyBinding"
            else registration.delete_validating_admission_policy
        )
        try:
            delete(obj["metadata"]["name"])
        except ApiException as error:
            if error.status != 404:
                raise


def wait_active(as_operator: client.CoreV1Api, *, served_namespace: str, policy: str, timeout: float = 30.0) -> None:
    """Until the API server enforces ``policy`` on the operator: a dry-run create of a Secret named
    outside the fence, as the operator, is refused by that policy."""
    body = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": PROBE_SECRET}}
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            as_operator.create_namespaced_secret(served_namespace, body, dry_run="All")
            last = "admitted"
        except ApiException as error:
            last = f"{error.status}: {error.body}"
            if error.status == 403 and f"ValidatingAdmissionPolicy '{policy}'" in str(error.body):
                return
        time.sleep(0.2)
    raise AssertionError(f"the fence {policy} did not become active within {timeout:.0f}s (last answer: {last})")
