"""Self-retirement (#33 part 2) on a real API server, the webhooks really called: an agent ends
its own identity with its own token (the plain API call, the Python API and ``kubectl agent
done``), its delegates with it; and the attacks on that right: retiring someone else's identity
with your agent's token, using the right to change anything else on your own identity, undoing it.

alice and mallory hold the built-in ``edit`` role in the namespace plus rights on identities;
alice creates the agents.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from agent_identity.kube.client import Kube
from agent_identity.sdk.client import AgentIdentities, IdentityRefused, done
from support.cluster import GROUP, PLURAL, VERSION, Cluster, impersonating, make_identity, wait_for
from support.webhooks import served_with_people

pytestmark = pytest.mark.e2e


@dataclass
class Arena:
    cluster: Cluster
    namespace: str

    def ready(self, name: str, **spec: Any) -> dict[str, Any]:
        manifest = make_identity(name, self.namespace, **spec)
        impersonating(self.cluster, "alice").create_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, manifest)
        return self.cluster.wait_phase(self.namespace, name, "Ready")

    def token(self, name: str) -> str:
        return self.cluster.token_secret(self.namespace, name)["token"]

    def agent_objects(self, name: str) -> client.CustomObjectsApi:
        """The custom-objects API with ``name``'s own token."""
        return client.CustomObjectsApi(self.cluster.token_client(self.token(name)))

    def agent_kube(self, name: str) -> Kube:
        configuration = client.Configuration()
        configuration.host, configuration.ssl_ca_cert = self.cluster.host, self.cluster.ca_file
        configuration.api_key = {"authorization": f"Bearer {self.token(name)}"}
        return Kube(configuration, pool_size=1)

    def retired(self, name: str, reason: str) -> dict[str, Any]:
        body = self.cluster.wait_phase(self.namespace, name, "Expired")
        ready = {c["type"]: c for c in body["status"]["conditions"]}["Ready"]
        assert ready["reason"] == reason, ready
        assert not any(self.cluster.children(self.namespace, name).values())
        return body


def refusal(call: Any, statuses: tuple[int, ...] = (403, 422)) -> str:
    with pytest.raises(ApiException) as refused:
        call()
    assert refused.value.status in statuses, refused.value.body
    return str(json.loads(refused.value.body)["message"])


@pytest.fixture(scope="module")
def arena(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Arena]:
    with served_with_people(cluster, tmp_path_factory.mktemp("done"), "done") as namespace:
        yield Arena(cluster, namespace)


def test_the_agent_retires_itself_with_its_own_token_and_its_delegates_with_it(arena: Arena) -> None:
    arena.ready("worker")
    arena.ready("helper", delegator={"kind": "AgentIdentity", "name": "worker"}, ttl="5m")
    token = arena.token("worker")
    assert arena.cluster.token_review(token)["authenticated"] is True
    assert done(arena.agent_kube("worker")) == (arena.namespace, "worker")  # the Python API, from the pod's view
    body = arena.retired("worker", "SelfRetired")
    # Its token died with its ServiceAccount (the API server caches a token's review for up to 10 s).
    wait_for("the token to be refused", lambda: not arena.cluster.token_review(token)["authenticated"] or None, timeout=20)
    assert body["spec"]["done"] is True and arena.cluster.has_service_account(arena.namespace, "aid-worker") is None
    arena.retired("helper", "DelegatorRetired")
    assert "SelfRetired" in arena.cluster.events(arena.namespace, "worker")


def test_the_plain_api_call_and_the_credentials_object_retire_the_agent(arena: Arena) -> None:
    arena.ready("plain")
    arena.agent_objects("plain").patch_namespaced_custom_object(
        GROUP, VERSION, arena.namespace, PLURAL, "plain", {"spec": {"done": True}}
    )
    arena.retired("plain", "SelfRetired")
    arena.ready("sdk")
    credentials = AgentIdentities(namespace=arena.namespace, kubeconfig=str(arena.cluster.kubeconfig)).credentials("sdk")
    credentials.done()  # with the agent's own token, to the server its kubeconfig names
    arena.retired("sdk", "SelfRetired")


def test_kubectl_agent_done_from_the_agents_kubeconfig(arena: Arena, tmp_path: Path) -> None:
    arena.ready("cli")
    kubeconfig = tmp_path / "agent.kubeconfig"
    kubeconfig.write_text(arena.cluster.token_secret(arena.namespace, "cli")["kubeconfig"])
    command = [sys.executable, "-m", "agent_identity.sdk.cli", "done", "--kubeconfig", str(kubeconfig), "-o", "json"]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert finished.returncode == 0, finished.stderr
    assert json.loads(finished.stdout) == {"done": f"{arena.namespace}/cli"}
    arena.retired("cli", "SelfRetired")
    again = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert again.returncode == 1 and "error:" in again.stderr  # its token is refused now


def test_an_agents_token_cannot_retire_another_identity(arena: Arena) -> None:
    arena.ready("attacker")
    arena.ready("victim")
    attacker = arena.agent_objects("attacker")
    patch = {"spec": {"done": True}}
    message = refusal(lambda: attacker.patch_namespaced_custom_object(GROUP, VERSION, arena.namespace, PLURAL, "victim", patch))
    assert "forbidden" in message.lower()
    refusal(lambda: attacker.delete_namespaced_custom_object(GROUP, VERSION, arena.namespace, PLURAL, "victim"))
    with pytest.raises(IdentityRefused, match="forbidden"):
        AgentIdentities(namespace=arena.namespace, kube=arena.agent_kube("attacker")).done("victim")
    assert arena.cluster.phase(arena.namespace, "victim") == "Ready"


def test_the_right_is_patch_of_its_own_identity_and_nothing_more(arena: Arena) -> None:
    arena.ready("narrow")
    agent = arena.agent_objects("narrow")
    ns = arena.namespace
    # no read, no delete (the record stays and says why it ended), no status, no other object
    refusal(lambda: agent.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "narrow"))
    refusal(lambda: agent.delete_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "narrow"))
    refusal(
        lambda: agent.patch_namespaced_custom_object_status(GROUP, VERSION, ns, PLURAL, "narrow", {"status": {"phase": "Ready"}})
    )
    refusal(lambda: agent.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, make_identity("spawned", ns)))
    # and the patch it may make sets spec.done only: a forged label, annotation, finalizer or
    # stripped ownerReference is refused by the webhook, saying why
    for patch in (
        {"metadata": {"labels": {"team": "mine"}}},
        {"metadata": {"annotations": {"note": "keep me"}}},
        {"metadata": {"finalizers": ["example.com/keep-alive"]}},
        {"spec": {"done": True}, "metadata": {"labels": {"x": "y"}}},
    ):
        message = refusal(lambda patch=patch: agent.patch_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "narrow", patch))
        assert "may only set spec.done" in message, message
    assert arena.cluster.phase(ns, "narrow") == "Ready"
    body = arena.cluster.get_identity(ns, "narrow") or {}
    assert not body["metadata"].get("finalizers") and "note" not in (body["metadata"].get("annotations") or {})


def test_done_cannot_be_undone_and_the_seal_still_holds(arena: Arena) -> None:
    arena.ready("once")
    arena.agent_objects("once").patch_namespaced_custom_object(
        GROUP, VERSION, arena.namespace, PLURAL, "once", {"spec": {"done": True}}
    )
    arena.retired("once", "SelfRetired")
    mallory = impersonating(arena.cluster, "mallory")
    undo = {"spec": {"done": False}}
    message = refusal(lambda: mallory.patch_namespaced_custom_object(GROUP, VERSION, arena.namespace, PLURAL, "once", undo))
    assert "cannot be undone" in message
    # Nothing is re-provisioned: still Expired a moment later, no ServiceAccount.
    wait_for("a settled record", lambda: arena.cluster.phase(arena.namespace, "once") == "Expired" or None)
    assert arena.cluster.has_service_account(arena.namespace, "aid-once") is None
