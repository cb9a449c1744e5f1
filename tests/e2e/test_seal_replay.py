"""A creator seal vouches for one object, once, on a real API server.

The attacker, mallory, holds what a namespace's ``edit`` role gives on identities (create, get,
list, delete, patch of the status). Her identity was admitted and sealed; then the webhooks are
gone (an administrator removed them, or an outage window). The seal binds namespace, name, spec,
creator and admission time, not the uid the API server assigns later, so within the seal's
two-minute window she deletes her identity and re-creates one of the same name and spec with the
copied stamp, hoping the operator provisions it again.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from agent_identity.engine import failpoints
from support.cluster import GROUP, IDENTITY_EDITOR, PLURAL, VERSION, Cluster, impersonating, make_identity, wait_for
from support.operator_process import OperatorProcess
from support.webhooks import operator_with_webhooks, register_again, unregister

pytestmark = pytest.mark.e2e

CREATOR, SEAL = "agentidentity.dev/creator", "agentidentity.dev/creator-seal"
CM_GET = {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}


@dataclass
class Scene:
    cluster: Cluster
    namespace: str
    operator: OperatorProcess

    def create(self, name: str, *, spec: dict[str, Any] | None = None, annotations: dict[str, str] | None = None) -> None:
        manifest = make_identity(name, self.namespace, delegator=None, scopes=[CM_GET])
        manifest["spec"] = spec or manifest["spec"]
        if annotations:
            manifest["metadata"]["annotations"] = annotations
        impersonating(self.cluster, "mallory").create_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, manifest)

    def sealed(self, name: str) -> dict[str, Any]:
        """A Ready identity the webhooks admitted and sealed, and its token."""
        self.create(name)
        return self.cluster.wait_phase(self.namespace, name, "Ready")

    def delete(self, name: str) -> None:
        impersonating(self.cluster, "mallory").delete_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name)
        wait_for(f"{name} to be gone", lambda: self.cluster.get_identity(self.namespace, name) is None)
        wait_for(f"{name}'s children to be revoked", lambda: not any(self.cluster.children(self.namespace, name).values()))

    def replayed(self, original: dict[str, Any]) -> str:
        """Re-creates ``original`` with its stamp: the Denied message, once nothing was provisioned."""
        name = original["metadata"]["name"]
        self.create(name, spec=original["spec"], annotations=stamp_of(original))
        replay = self.cluster.get_identity(self.namespace, name)
        assert replay is not None and replay["metadata"]["uid"] != original["metadata"]["uid"]
        return self.denied(name)

    def denied(self, name: str) -> str:
        body = self.cluster.wait_phase(self.namespace, name, "Denied")
        ready = {c["type"]: c for c in body["status"]["conditions"]}["Ready"]
        assert ready["reason"] == "PolicyViolation"
        assert not any(self.cluster.children(self.namespace, name).values())  # no ServiceAccount, no token
        assert (
            self.cluster.call_status(lambda: self.cluster.core.read_namespaced_secret(f"aid-{name}-token", self.namespace)) == 404
        )
        return str(ready["message"])


def stamp_of(identity: dict[str, Any]) -> dict[str, str]:
    return {key: identity["metadata"]["annotations"][key] for key in (CREATOR, SEAL)}


@pytest.fixture(scope="module")
def scene(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scene]:
    namespace = cluster.create_test_namespace(f"replay-{uuid.uuid4().hex[:5]}")
    cluster.grant(namespace, "mallory", IDENTITY_EDITOR)
    with operator_with_webhooks(cluster, namespace, tmp_path_factory.mktemp("replay")) as process:
        yield Scene(cluster, namespace, process)
    cluster.delete_namespace(namespace)


def vouched_for(scene: Scene, original: dict[str, Any]) -> str:
    metadata = original["metadata"]
    claimed = f"AgentIdentity {scene.namespace}/{metadata['name']} uid {metadata['uid']}"
    return f"creator-sealed: metadata.annotations[{SEAL}]: this seal already vouched for {claimed}"


def test_an_identity_deleted_and_recreated_with_its_copied_stamp_gets_nothing(scene: Scene) -> None:
    """Attack: with the webhooks gone, delete one's sealed identity and, within the seal's window,
    re-create one of the same name and spec carrying the copied creator annotation and seal."""
    original = scene.sealed("reporter")
    unregister(scene.cluster)
    try:
        scene.delete("reporter")
        message = scene.replayed(original)
        assert vouched_for(scene, original) in message, message
    finally:
        register_again(scene.cluster, scene.operator)


def test_a_replay_with_the_first_objects_status_copied_gets_nothing(scene: Scene) -> None:
    """Attack: as above, but re-created while the operator is down, with the first object's Ready
    status (its seal binding included) written onto the replay before the operator looks."""
    original = scene.sealed("courier")
    unregister(scene.cluster)
    try:
        scene.delete("courier")
        scene.operator.stop()
        try:
            scene.create("courier", spec=original["spec"], annotations=stamp_of(original))
            impersonating(scene.cluster, "mallory").patch_namespaced_custom_object_status(
                GROUP, VERSION, scene.namespace, PLURAL, "courier", {"status": original["status"]}
            )
            assert scene.cluster.phase(scene.namespace, "courier") == "Ready"
        finally:
            scene.operator.start()
        message = scene.denied("courier")
        assert vouched_for(scene, original) in message, message
    finally:
        register_again(scene.cluster, scene.operator)


def test_an_identity_deleted_and_recreated_through_the_webhooks_is_provisioned_again(scene: Scene) -> None:
    """The legitimate path is untouched: a re-created identity admitted by the webhooks gets a seal
    of its own (a fresh nonce), even in the same second, and is provisioned."""
    first = scene.sealed("again")
    scene.delete("again")
    second = scene.sealed("again")
    assert second["metadata"]["annotations"][SEAL] != first["metadata"]["annotations"][SEAL]


def test_killed_right_after_claiming_a_seal_the_operator_provisions_its_owner(scene: Scene) -> None:
    """Crash: the operator dies between the ledger's claim and anything else. The restarted one finds
    the claim names this very uid, and provisions it once."""
    scene.operator.stop()
    scene.operator.start(failpoint="after-seal-claim")
    register_again(scene.cluster, scene.operator)
    scene.create("crashy")
    assert scene.operator.wait_exit() == failpoints.EXIT_CODE, "the operator did not reach the failpoint"
    scene.operator.start()
    register_again(scene.cluster, scene.operator)
    scene.cluster.wait_phase(scene.namespace, "crashy", "Ready")
    assert scene.cluster.children(scene.namespace, "crashy") == {
        "ServiceAccount": ["aid-crashy"],
        "Role": ["aid-crashy"],
        "RoleBinding": ["aid-crashy"],
        "Secret": ["aid-crashy-token"],
    }
