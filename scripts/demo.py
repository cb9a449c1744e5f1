"""`make demo`: a local control plane, the operator, the examples, and a live view of identities
provisioning and expiring. Ctrl-C stops everything it started.

Set DEMO_EXIT_WHEN_DONE=1 to exit on its own once every identity has expired (used by CI-style
smoke runs); by default it keeps showing the view until interrupted.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from agent_identity.local.controlplane import ControlPlaneError, free_port, listening, register_webhooks, running

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / ".demo"
GROUP, VERSION, PLURAL = "agentidentity.dev", "v1alpha1", "agentidentities"
EXAMPLES = ["namespace.yaml", "single-agent.yaml", "delegation-chain.yaml"]
OPERATOR_NAMESPACE = "agent-identity-system"


def apply(api: client.ApiClient, document: dict[str, Any]) -> None:
    kind, metadata = document["kind"], document["metadata"]
    try:
        if kind == "Namespace":
            client.CoreV1Api(api).create_namespace(document)
        elif kind == "CustomResourceDefinition":
            client.ApiextensionsV1Api(api).create_custom_resource_definition(document)
        elif kind == "AgentIdentity":
            client.CustomObjectsApi(api).create_namespaced_custom_object(GROUP, VERSION, metadata["namespace"], PLURAL, document)
        else:
            raise SystemExit(f"demo cannot apply kind {kind}")
    except ApiException as error:
        if error.status != 409:
            raise
    print(f"  applied {kind} {metadata.get('namespace', '') + '/' if metadata.get('namespace') else ''}{metadata['name']}")


def wait_established(api: client.ApiClient, name: str) -> None:
    extensions = client.ApiextensionsV1Api(api)
    for _ in range(100):
        crd = extensions.read_custom_resource_definition(name)
        if any(c.type == "Established" and c.status == "True" for c in crd.status.conditions or []):
            return
        time.sleep(0.1)
    raise SystemExit(f"the CRD {name} was not established")


def wait_for(what: str, ready: Callable[[], bool], operator: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if operator.poll() is not None:
            raise SystemExit(f"the operator exited ({operator.returncode}) before {what} was ready: see .demo/operator.log")
        if time.monotonic() > deadline:
            raise SystemExit(f"{what} was not ready within {timeout:.0f}s: see .demo/operator.log")
        time.sleep(0.2)


def wait_for_delegator(api: client.ApiClient, document: dict[str, Any], operator: subprocess.Popen[bytes]) -> None:
    """The webhook admits a delegate only once its delegator is Ready (nobody squats on a name)."""
    delegator = (document.get("spec") or {}).get("delegator") or {}
    if document["kind"] != "AgentIdentity" or delegator.get("kind") != "AgentIdentity":
        return
    custom, namespace = client.CustomObjectsApi(api), document["metadata"]["namespace"]

    def ready() -> bool:
        body = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, delegator["name"])
        return bool((body.get("status") or {}).get("phase") == "Ready")

    wait_for(f"delegator {namespace}/{delegator['name']}", ready, operator)


def time_left(status: dict[str, Any]) -> str:
    if not status.get("expiresAt"):
        return "-"
    left = (datetime.fromisoformat(status["expiresAt"].replace("Z", "+00:00")) - datetime.now(UTC)).total_seconds()
    return f"{int(left)}s" if left > 0 else "retired" if status.get("phase") == "Expired" else "due"


def render(items: list[dict[str, Any]], audit_tail: list[str], token_check: list[str]) -> str:
    rows = [f"{'NAME':<12} {'PHASE':<9} {'TIME LEFT':<10} {'DELEGATION CHAIN':<56} TASK"]
    for item in sorted(items, key=lambda i: i["metadata"]["creationTimestamp"] + i["metadata"]["name"]):
        status = item.get("status") or {}
        chain = " -> ".join([*(status.get("delegationChain") or []), "(this agent)"])
        name, phase = item["metadata"]["name"], status.get("phase", "Pending")
        rows.append(f"{name:<12} {phase:<9} {time_left(status):<10} {chain:<56} {item['spec']['task']}")
    now = datetime.now(UTC).strftime("%H:%M:%S")
    lines = [f"agent-identity-operator demo   {now} UTC   (Ctrl-C to stop and clean up)", "", *rows, ""]
    lines += ["Using the summarizer's token:", *token_check, "", "Audit log (latest):", *audit_tail]
    return "\x1b[2J\x1b[H" + "\n".join(lines)


class TokenProbe:
    """Calls the API with the summarizer's own token: what its scopes allow, what they don't, and,
    once it has been retired, that the very same token is refused."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.api, self.namespace = api, namespace
        self.token: str | None = None

    def lines(self) -> list[str]:
        if self.token is None:
            try:
                secret = client.CoreV1Api(self.api).read_namespaced_secret("aid-summarizer-token", self.namespace)
                self.token = base64.b64decode((secret.data or {})["token"]).decode()
            except (ApiException, KeyError):
                return ["  (waiting for the token)"]
        configuration = client.Configuration()
        configuration.host = self.api.configuration.host
        configuration.ssl_ca_cert = self.api.configuration.ssl_ca_cert
        configuration.api_key = {"BearerToken": f"Bearer {self.token}"}
        agent = client.CoreV1Api(client.ApiClient(configuration))
        results = []
        for what, call in (
            ("list configmaps (in scope)", lambda: agent.list_namespaced_config_map(self.namespace)),
            ("list secrets (out of scope)", lambda: agent.list_namespaced_secret(self.namespace)),
        ):
            try:
                call()
                results.append(f"  {what:<30} -> allowed")
            except ApiException as error:
                results.append(f"  {what:<30} -> {error.status} {error.reason}")
        return results


def main() -> None:
    WORK.mkdir(exist_ok=True)
    exit_when_done = os.environ.get("DEMO_EXIT_WHEN_DONE") == "1"
    print("Starting the local control plane (etcd, kube-apiserver, kube-controller-manager)...")
    try:
        with running(log_dir=WORK / "control-plane-logs") as plane:
            kubeconfig = WORK / "kubeconfig"
            kubeconfig.write_text(plane.kubeconfig_path.read_text())
            print(f"  API server at {plane.server}; admin kubeconfig: {kubeconfig}")
            api = config.new_client_from_config(config_file=str(kubeconfig))
            print("Installing the CRDs...")
            for path in sorted((REPO / "crds").glob("*.yaml")):  # the operator waits for all of them
                crd = yaml.safe_load(path.read_text())
                apply(api, crd)
                wait_established(api, crd["metadata"]["name"])
            apply(api, {"kind": "Namespace", "metadata": {"name": OPERATOR_NAMESPACE}})
            print("Starting the operator with its admission webhooks (log: .demo/operator.log)...")
            log = (WORK / "operator.log").open("w")
            port, cert_dir = free_port(), WORK / "webhook-certs"
            operator = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "agent_identity",
                    "--retain-for=10m",
                    f"--webhook-port={port}",
                    f"--webhook-cert-dir={cert_dir}",
                    f"--webhook-client-ca={plane.webhook_client_ca}",  # it answers the API server only
                    f"--operator-namespace={OPERATOR_NAMESPACE}",
                ],
                env={**os.environ, "KUBECONFIG": str(kubeconfig), "PYTHONUNBUFFERED": "1"},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            try:
                wait_for("the webhook server", lambda: (cert_dir / "ca.crt").exists() and listening(port), operator)
                register_webhooks(
                    api,
                    url=f"https://127.0.0.1:{port}",
                    ca_bundle=(cert_dir / "ca.crt").read_bytes(),
                    exclude_namespace=OPERATOR_NAMESPACE,
                )
                print("Applying examples/ (a delegate once its delegator is Ready)...")
                for name in EXAMPLES:
                    for document in yaml.safe_load_all((REPO / "examples" / name).read_text()):
                        wait_for_delegator(api, document, operator)
                        apply(api, document)
                watch(api, exit_when_done=exit_when_done)
            finally:
                operator.terminate()
                operator.wait(timeout=15)
    except KeyboardInterrupt:
        print("\nStopped; the control plane and the operator are gone.")
    except ControlPlaneError as error:
        raise SystemExit(f"error: {error}") from None


def watch(api: client.ApiClient, *, exit_when_done: bool) -> None:
    custom = client.CustomObjectsApi(api)
    probe = TokenProbe(api, "support")
    while True:
        items = custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)["items"]
        audit = [json.loads(line) for line in (WORK / "operator.log").read_text().splitlines() if line.startswith('{"audit"')]
        audit_tail = [
            f"  {a['time']} {a['action']:<13} {a['namespace']}/{a['name']} chain={a['delegationChain']}" for a in audit[-8:]
        ]
        print(render(items, audit_tail, probe.lines()), flush=True)
        expired = items and all((i.get("status") or {}).get("phase") == "Expired" for i in items)
        if exit_when_done and expired and all("401" in line for line in probe.lines()):
            print("\nEvery identity has expired, holds no credentials, and the old token is refused.")
            return
        time.sleep(1)


if __name__ == "__main__":
    main()
