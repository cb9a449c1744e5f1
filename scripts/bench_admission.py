"""`make bench-admission`: what one AgentIdentity create costs in the admission webhooks.

The largest spec the cap allows (64 permission atoms, every one held by the creator, so all 64
SubjectAccessReviews run) is created BENCH_ADMISSION_COUNT times as a limited user, dry-run (the
webhooks run; nothing is stored or reconciled), one at a time; then a spec one atom over the cap
and a spec whose first atom the creator lacks (both refused before or at the first review).
Prints p50/p99/max of the create round trip and the API server's own webhook latency histogram.

The operator answers only the API server's webhook client certificate (``--webhook-client-ca``),
unless BENCH_ADMISSION_CLIENT_AUTH=0. Then the same creates while BENCH_ADMISSION_FLOOD clients (default 8; 0: skip) send crafted
AdmissionReviews straight to the webhook port from another address (127.0.0.2, as a pod would
from its own IP): the largest spec, claiming ``system:masters`` under a new uid each time, so no
cached answer helps and every one asks all 64 SubjectAccessReviews. Prints the genuine creates'
p50/p99/max under the flood and how the flood's own requests were answered.
Figures only, no assertions.
"""

from __future__ import annotations

import http.client
import json
import os
import ssl
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from agent_identity.admission.identity import MUTATE_PATH
from agent_identity.api.v1alpha1 import MAX_PERMISSION_ATOMS
from agent_identity.local.controlplane import free_port, listening, register_webhooks, running, terminate

REPO = Path(__file__).resolve().parents[1]
GROUP, VERSION, PLURAL = "agentidentity.dev", "v1alpha1", "agentidentities"
COUNT = int(os.environ.get("BENCH_ADMISSION_COUNT", "200"))
FLOOD = int(os.environ.get("BENCH_ADMISSION_FLOOD", "8"))
CLIENT_AUTH = os.environ.get("BENCH_ADMISSION_CLIENT_AUTH", "1") != "0"  # the webhooks answer the API server only
FLOOD_SOURCE = "127.0.0.2"  # loopback, but not the API server's address: another peer
NAMESPACE, USER = "bench-admission", "bencher"
VERBS = ["get", "list", "watch", "update"]
RESOURCES = [f"widgets{i}" for i in range(MAX_PERMISSION_ATOMS // len(VERBS))]  # 4 x 16 = the cap


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def manifest(name: str, resources: list[str]) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "AgentIdentity",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "task": "admission benchmark",
            "ttl": "10m",
            "delegator": {"kind": "User", "name": USER},
            "scopes": [{"apiGroups": [""], "resources": resources, "verbs": VERBS}],
        },
    }


def timed_create(custom: client.CustomObjectsApi, body: dict[str, Any]) -> tuple[float, str]:
    start = time.perf_counter()
    try:
        custom.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, body, dry_run="All")
        outcome = "admitted"
    except ApiException as error:
        outcome = f"refused ({error.status})"
    return time.perf_counter() - start, outcome


def crafted_review(body: dict[str, Any]) -> bytes:
    """An AdmissionReview nobody sent through the API server: it claims to be a cluster admin."""
    request = {
        "uid": str(uuid.uuid4()),
        "kind": {"group": GROUP, "version": VERSION, "kind": "AgentIdentity"},
        "resource": {"group": GROUP, "version": VERSION, "resource": PLURAL},
        "operation": "CREATE",
        "namespace": NAMESPACE,
        "name": body["metadata"]["name"],
        "userInfo": {"username": "mallory", "uid": str(uuid.uuid4()), "groups": ["system:masters", "system:authenticated"]},
        "object": body,
        "dryRun": True,
    }
    return json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}).encode()


def flood(port: int, stop: threading.Event, answers: Counter[str]) -> None:
    """Sends crafted reviews one after another on one kept-alive connection until ``stop``."""
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    body = manifest("crafted", RESOURCES)
    while not stop.is_set():
        connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, source_address=(FLOOD_SOURCE, 0))
        try:
            while not stop.is_set():
                connection.request("POST", f"/{MUTATE_PATH}", crafted_review(body), {"Content-Type": "application/json"})
                response = connection.getresponse()
                response.read()
                answers[str(response.status)] += 1
        except (OSError, http.client.HTTPException):
            answers["connection error"] += 1
        finally:
            connection.close()


def summary(times: list[float]) -> str:
    ms = [t * 1000 for t in times]
    return f"p50 {statistics.median(ms):.1f} ms, p99 {percentile(ms, 0.99):.1f} ms, max {max(ms):.1f} ms"


def print_flooded(port: int, custom: client.CustomObjectsApi) -> None:
    stop, answers = threading.Event(), Counter[str]()
    senders = [threading.Thread(target=flood, args=(port, stop, answers), daemon=True) for _ in range(FLOOD)]
    for sender in senders:
        sender.start()
    time.sleep(2)  # the flood under way
    flooded = [timed_create(custom, manifest(f"flooded-{index}", RESOURCES)) for index in range(COUNT)]
    stop.set()
    for sender in senders:
        sender.join(timeout=10)
    callers = "the API server only" if CLIENT_AUTH else "any client"
    print(f"Under a flood of crafted reviews from {FLOOD} clients at {FLOOD_SOURCE} (64 reviews each, never cached;")
    print(f"  the webhooks answer {callers}):")
    print(f"  {COUNT} dry-run creates, one at a time: {sorted(Counter(o for _, o in flooded).items())}")
    print(f"  round trip {summary([t for t, _ in flooded])}")
    print(f"  the flood's requests answered: {dict(sorted(answers.items()))}")


def webhook_histogram(api: client.ApiClient) -> list[str]:
    serialized = api.param_serialize(method="GET", resource_path="/metrics", auth_settings=["BearerToken"])
    text = api.call_api(*serialized).read().decode()
    wanted = 'apiserver_admission_webhook_admission_duration_seconds_bucket{name="mutate.agentidentities'
    return [line for line in text.splitlines() if line.startswith(wanted) and 'operation="CREATE"' in line]


def main() -> None:
    work = REPO / ".bench"
    work.mkdir(exist_ok=True)
    with running(log_dir=work / "admission-control-plane") as plane:
        api = config.new_client_from_config(config_file=str(plane.kubeconfig_path))
        extensions, core, rbac = client.ApiextensionsV1Api(api), client.CoreV1Api(api), client.RbacAuthorizationV1Api(api)
        for path in sorted((REPO / "crds").glob("*.yaml")):
            extensions.create_custom_resource_definition(yaml.safe_load(path.read_text()))
        for namespace in (NAMESPACE, "agent-identity-system"):
            core.create_namespace({"metadata": {"name": namespace}})
        rules = [
            {"apiGroups": [""], "resources": RESOURCES, "verbs": VERBS},
            {"apiGroups": [GROUP], "resources": [PLURAL], "verbs": ["create"]},
        ]
        rbac.create_namespaced_role(NAMESPACE, {"metadata": {"name": USER}, "rules": rules})
        rbac.create_namespaced_role_binding(
            NAMESPACE,
            {
                "metadata": {"name": USER},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": USER},
                "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": USER}],
            },
        )
        port, certs = free_port(), work / "admission-webhook-certs"
        log = (work / "admission-operator.log").open("w")
        operator = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "agent_identity",
                "--namespace",
                NAMESPACE,
                "--webhook-port",
                str(port),
                "--webhook-cert-dir",
                str(certs),
                *(["--webhook-client-ca", str(plane.webhook_client_ca)] if CLIENT_AUTH else []),
            ],
            env={**os.environ, "KUBECONFIG": str(plane.kubeconfig_path)},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 60
            while not (certs / "ca.crt").exists() or not listening(port):
                if time.monotonic() > deadline:
                    raise SystemExit("the operator's webhook server did not start: see .bench/admission-operator.log")
                time.sleep(0.2)
            register_webhooks(api, url=f"https://127.0.0.1:{port}", ca_bundle=(certs / "ca.crt").read_bytes())
            user = config.new_client_from_config(config_file=str(plane.kubeconfig_path))
            user.set_default_header("Impersonate-User", USER)
            user.set_default_header("Impersonate-Group", "system:authenticated")
            custom = client.CustomObjectsApi(user)
            for _ in range(10):  # warm-up: connections, caches
                timed_create(custom, manifest("warm", RESOURCES))
            times, outcomes = [], set()
            for index in range(COUNT):
                elapsed, outcome = timed_create(custom, manifest(f"largest-{index}", RESOURCES))
                times.append(elapsed)
                outcomes.add(outcome)
            over, over_outcome = timed_create(custom, manifest("over-cap", [*RESOURCES, "widgets-extra"]))
            lacking, lacking_outcome = timed_create(custom, manifest("lacking", ["secrets", *RESOURCES[1:]]))
            atoms = MAX_PERMISSION_ATOMS
            print(f"Admission of the largest allowed spec ({atoms} atoms, {atoms} SubjectAccessReviews):")
            print(f"  {COUNT} dry-run creates, one at a time: {sorted(outcomes)}")
            print(f"  round trip {summary(times)}")
            print(f"  one atom over the cap: {over * 1000:.1f} ms, {over_outcome}")
            print(f"  first atom not held by the creator: {lacking * 1000:.1f} ms, {lacking_outcome}")
            print("  API server's webhook latency histogram (mutate, CREATE):")
            for line in webhook_histogram(api):
                print(f"    {line}")
            if FLOOD:
                print_flooded(port, custom)
        finally:
            terminate(operator, timeout=15)


if __name__ == "__main__":
    main()
