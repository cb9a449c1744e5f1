"""Attacks by users with namespace rights only, on a real API server, the webhooks really called.

Each test is written the way the attacker would try it: impersonating a limited user, writing
a creator stamp of their own, copying someone else's seal, naming someone else's agent as their
delegator, stripping ownerReferences and labels, writing a status. Each names the attack it closes.

The operator serves two namespaces: ``hostile`` (covered by its webhooks) and ``hostile-op``, its
own namespace, which the webhooks exclude as a real installation's must. It runs with
``--require-profile`` and a 40 s seal-key rotation, so keys rotate while the module runs.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from support.cluster import GROUP, PLURAL, VERSION, Cluster, impersonating, make_identity, wait_for
from support.operator_process import OperatorProcess
from support.webhooks import operator_with_webhooks, register_again, unregister

pytestmark = pytest.mark.e2e

CREATOR, SEAL = "agentidentity.dev/creator", "agentidentity.dev/creator-seal"
CM_READ = {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}
CM_GET = {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}
IDENTITIES = {"apiGroups": [GROUP], "resources": [PLURAL], "verbs": ["create", "get"]}
EVERYTHING = [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]
ADMIN = json.dumps({"username": "system:admin", "groups": ["system:masters", "system:authenticated"]})


@dataclass
class Arena:
    cluster: Cluster
    namespace: str  # served, covered by the webhooks
    own: str  # the operator's own namespace: served, NOT covered by the webhooks
    lax: str  # profile names
    strict: str
    operator: OperatorProcess

    def create(self, user: str, name: str, namespace: str | None = None, **spec: Any) -> dict[str, Any]:
        manifest = make_identity(name, namespace or self.namespace, **({"profile": self.lax, "ttl": "5m"} | spec))
        return dict(
            impersonating(self.cluster, user).create_namespaced_custom_object(
                GROUP, VERSION, manifest["metadata"]["namespace"], PLURAL, manifest
            )
        )

    def refusal(self, user: str, name: str, **spec: Any) -> str:
        with pytest.raises(ApiException) as refused:
            self.create(user, name, **spec)
        assert refused.value.status in (403, 422), refused.value.body
        assert self.cluster.get_identity(self.namespace, name) is None
        return str(json.loads(refused.value.body)["message"])

    def ready(self, user: str, name: str, **spec: Any) -> dict[str, Any]:
        self.create(user, name, **spec)
        return self.cluster.wait_phase(self.namespace, name, "Ready")

    def denied(self, name: str, namespace: str | None = None) -> str:
        body = self.cluster.wait_phase(namespace or self.namespace, name, "Denied")
        ready = {c["type"]: c for c in body["status"]["conditions"]}["Ready"]
        assert ready["reason"] == "PolicyViolation"
        assert not any(self.cluster.children(namespace or self.namespace, name).values())
        return str(ready["message"])

    def token(self, name: str) -> str:
        return self.cluster.token_secret(self.namespace, name)["token"]


@pytest.fixture(scope="module")
def arena(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Arena]:
    suffix = uuid.uuid4().hex[:5]
    namespace, own = cluster.create_test_namespace(f"hostile-{suffix}"), cluster.create_test_namespace(f"hostile-op-{suffix}")
    lax, strict = f"lax-{suffix}", f"strict-{suffix}"
    profiles = {
        lax: {
            "riskLevel": "high",
            "maxTTL": "1h",
            "maxDelegationDepth": 5,
            "permissionCeiling": EVERYTHING,
            "audiences": ["a", "b"],
        },
        strict: {
            "riskLevel": "low",
            "maxTTL": "10m",
            "maxDelegationDepth": 1,
            "permissionCeiling": EVERYTHING,
            "audiences": ["a"],
        },
    }
    for name, spec in profiles.items():
        cluster.custom.create_cluster_custom_object(
            GROUP,
            VERSION,
            "agentprofiles",
            {"apiVersion": f"{GROUP}/{VERSION}", "kind": "AgentProfile", "metadata": {"name": name}, "spec": spec},
        )
    everyday = [CM_READ, {"apiGroups": [GROUP], "resources": [PLURAL], "verbs": ["create", "get", "list", "delete"]}]
    # mallory may also write statuses and annotations: the rights a careless namespace admin role hands out
    cluster.grant(
        namespace,
        "mallory",
        [*everyday, {"apiGroups": [GROUP], "resources": [PLURAL, f"{PLURAL}/status"], "verbs": ["patch", "update"]}],
    )
    cluster.grant(own, "mallory", [{"apiGroups": [GROUP], "resources": [PLURAL], "verbs": ["create", "get"]}])
    cluster.grant(namespace, "alice", everyday)
    cluster.grant(namespace, "ops", everyday)
    cluster.rbac.create_cluster_role(
        {
            "metadata": {"name": f"impersonate-alice-{suffix}"},
            "rules": [{"apiGroups": [""], "resources": ["users"], "verbs": ["impersonate"], "resourceNames": ["alice"]}],
        }
    )
    cluster.rbac.create_cluster_role_binding(
        {
            "metadata": {"name": f"impersonate-alice-{suffix}"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": f"impersonate-alice-{suffix}"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "ops"}],
        }
    )
    args = ["--namespace", own, "--operator-namespace", own, "--require-profile", "--key-rotation", "40s"]
    with operator_with_webhooks(
        cluster, namespace, tmp_path_factory.mktemp("hostile"), extra_args=args, exclude_namespace=own
    ) as process:
        yield Arena(cluster, namespace, own, lax, strict, process)
    for name in profiles:
        cluster.custom.delete_cluster_custom_object(GROUP, VERSION, "agentprofiles", name)
    cluster.rbac.delete_cluster_role_binding(f"impersonate-alice-{suffix}")
    cluster.rbac.delete_cluster_role(f"impersonate-alice-{suffix}")
    for ns in (namespace, own):
        cluster.delete_namespace(ns)


# -- 1. no identity is provisioned on an unverified creator -----------------------------------------


def test_claiming_system_masters_in_the_operators_own_namespace_gets_nothing(arena: Arena) -> None:
    """Attack: in the namespace the webhooks exclude, write a creator stamp claiming system:masters
    and ask for a token for the operator's own ServiceAccount."""
    manifest = make_identity(
        "takeover",
        arena.own,
        profile=arena.lax,
        scopes=[
            {
                "apiGroups": [""],
                "resources": ["serviceaccounts/token"],
                "verbs": ["create"],
                "resourceNames": ["agent-identity-operator"],
            }
        ],
    )
    manifest["metadata"]["annotations"] = {CREATOR: ADMIN}
    impersonating(arena.cluster, "mallory").create_namespaced_custom_object(GROUP, VERSION, arena.own, PLURAL, manifest)
    message = arena.denied("takeover", arena.own)
    assert "namespace-served:" in message and "operator's own namespace" in message, message
    assert "creator-sealed:" in message, message
    assert arena.cluster.call_status(lambda: arena.cluster.core.read_namespaced_service_account("aid-takeover", arena.own)) == 404


def test_a_seal_copied_from_someone_elses_identity_is_worthless(arena: Arena) -> None:
    """Attack: with the webhooks out of the way, copy the creator stamp and seal of an admin's
    identity onto one's own identity with the same spec."""
    original = arena.ready("alice", "sealed-original", scopes=[CM_READ])
    stamp = {key: original["metadata"]["annotations"][key] for key in (CREATOR, SEAL)}
    assert json.loads(stamp[CREATOR])["username"] == "alice"
    unregister(arena.cluster)
    try:
        manifest = make_identity("sealed-copy", arena.namespace, profile=arena.lax, ttl="5m", scopes=[CM_READ])
        manifest["metadata"]["annotations"] = stamp
        impersonating(arena.cluster, "mallory").create_namespaced_custom_object(GROUP, VERSION, arena.namespace, PLURAL, manifest)
        message = arena.denied("sealed-copy")
        assert "creator-sealed:" in message and "copied from another object" in message, message
    finally:
        register_again(arena.cluster, arena.operator, exclude_namespace=arena.own)


def test_editing_the_creator_of_a_live_identity_revokes_it(arena: Arena) -> None:
    """Attack: with the webhooks out of the way, rewrite the creator of a Ready identity to borrow
    more than its creator holds. The seal no longer holds: the identity is Denied, its token dead."""
    arena.ready("alice", "edited", scopes=[CM_READ])
    token = arena.token("edited")
    unregister(arena.cluster)
    try:
        impersonating(arena.cluster, "mallory").patch_namespaced_custom_object(
            GROUP, VERSION, arena.namespace, PLURAL, "edited", {"metadata": {"annotations": {CREATOR: ADMIN}}}
        )
        message = arena.denied("edited")
        assert "creator-sealed:" in message and "was edited" in message, message
    finally:
        register_again(arena.cluster, arena.operator, exclude_namespace=arena.own)
    wait_for("the token to be refused", lambda: not arena.cluster.token_review(token)["authenticated"], timeout=20)


def test_a_forged_ready_status_never_skips_the_checks(arena: Arena) -> None:
    """Attack: create an identity nobody admitted (the webhooks out of the way, the operator down)
    and write ``phase: Ready`` into its status, hoping the reconciler trusts it and only "repairs"."""
    unregister(arena.cluster)
    arena.operator.stop()
    try:
        manifest = make_identity("forged-status", arena.namespace, profile=arena.lax, ttl="5m", scopes=EVERYTHING)
        manifest["metadata"]["annotations"] = {CREATOR: ADMIN}
        mallory = impersonating(arena.cluster, "mallory")
        mallory.create_namespaced_custom_object(GROUP, VERSION, arena.namespace, PLURAL, manifest)
        status = {"phase": "Ready", "serviceAccountUID": "forged", "expiresAt": "2099-01-01T00:00:00Z"}
        mallory.patch_namespaced_custom_object_status(
            GROUP, VERSION, arena.namespace, PLURAL, "forged-status", {"status": status}
        )
        assert arena.cluster.phase(arena.namespace, "forged-status") == "Ready"
    finally:
        arena.operator.start()
        register_again(arena.cluster, arena.operator, exclude_namespace=arena.own)
    assert "creator-sealed:" in arena.denied("forged-status")


def test_seal_keys_rotate_without_refusing_anyone(arena: Arena) -> None:
    """Rotation without downtime: identities sealed under the previous key keep reconciling
    (their seals still hold after a restart), new ones are sealed with the new key."""
    before = arena.ready("alice", "before-rotation", scopes=[CM_GET])
    first_kid = before["metadata"]["annotations"][SEAL].split(".")[1]

    def rotated() -> str | None:
        arena.create("alice", f"probe-{uuid.uuid4().hex[:6]}", scopes=[CM_GET])
        seals = [(item["metadata"].get("annotations") or {}).get(SEAL) for item in _identities(arena)]
        kids = [seal.split(".")[1] for seal in seals if seal]
        return next((kid for kid in kids if kid != first_kid), None)

    wait_for("an identity sealed with the next key", rotated, timeout=90, interval=5)
    secret = arena.cluster.core.read_namespaced_secret("agent-identity-seal-keys", arena.own)
    assert secret.metadata.labels["app.kubernetes.io/managed-by"] == "agent-identity-operator"
    arena.operator.stop()
    arena.operator.start()
    register_again(arena.cluster, arena.operator, exclude_namespace=arena.own)
    # alice may name it as delegator only if its old-key seal still vouches that she created it
    arena.ready(
        "alice", "after-rotation", ttl="1m", scopes=[CM_GET], delegator={"kind": "AgentIdentity", "name": "before-rotation"}
    )
    assert arena.cluster.phase(arena.namespace, "before-rotation") == "Ready"


def _identities(arena: Arena) -> list[dict[str, Any]]:
    return list(arena.cluster.custom.list_namespaced_custom_object(GROUP, VERSION, arena.namespace, PLURAL)["items"])


def test_without_webhooks_the_operator_refuses_to_start() -> None:
    """Misconfiguration: an operator started without --webhook-port would provision on trust."""
    result = subprocess.run(
        [sys.executable, "-m", "agent_identity", "--namespace", "x"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 2
    assert "--webhook-port is required" in result.stderr and "--unsafe-no-admission-webhooks" in result.stderr


# -- 2. delegation only by those who hold the delegator ----------------------------------------------


def test_nobody_may_name_someone_elses_agent_as_delegator(arena: Arena) -> None:
    """Attack: name alice's Ready agent as delegator, so the chain and assertion claim user:alice."""
    arena.ready("alice", "alice-lead", scopes=[CM_READ], delegator={"kind": "User", "name": "alice"})
    message = arena.refusal(
        "mallory", "mallory-sub", ttl="1m", scopes=[CM_GET], delegator={"kind": "AgentIdentity", "name": "alice-lead"}
    )
    assert "delegator-held:" in message and "only the agent itself, its creator or" in message, message
    assert "alice" not in message.replace("alice-lead", ""), f"the refusal tells mallory who created alice-lead: {message}"
    # someone allowed to impersonate alice may; so may alice herself
    chain = arena.ready("ops", "ops-sub", ttl="1m", scopes=[CM_GET], delegator={"kind": "AgentIdentity", "name": "alice-lead"})
    assert chain["status"]["delegationChain"] == ["user:alice", f"agent:{arena.namespace}/alice-lead"]
    arena.ready("alice", "alice-sub", ttl="1m", scopes=[CM_GET], delegator={"kind": "AgentIdentity", "name": "alice-lead"})


def test_nobody_squats_on_a_delegator_name_created_later(arena: Arena) -> None:
    """Attack: name a delegator that does not exist yet, to inherit whoever creates it later."""
    message = arena.refusal(
        "alice", "squatter", ttl="1m", scopes=[CM_GET], delegator={"kind": "AgentIdentity", "name": "not-yet"}
    )
    assert "delegator-ready:" in message and "does not exist" in message, message


def test_an_agent_creating_an_agent_delegates_within_its_own_bounds(arena: Arena) -> None:
    """Attack: an agent granted ``create agentidentities`` mints an identity that outlives it,
    drops its chain, or claims to act for a person directly."""
    lead = arena.ready(
        "alice", "orchestrator", ttl="10m", scopes=[CM_READ, IDENTITIES], delegator={"kind": "User", "name": "alice"}
    )
    agent = client.CustomObjectsApi(arena.cluster.token_client(arena.token("orchestrator")))

    def as_agent(name: str, **spec: Any) -> dict[str, Any]:
        manifest = make_identity(name, arena.namespace, **({"profile": arena.lax, "scopes": [CM_GET]} | spec))
        return dict(agent.create_namespaced_custom_object(GROUP, VERSION, arena.namespace, PLURAL, manifest))

    def refused(name: str, **spec: Any) -> str:
        with pytest.raises(ApiException) as error:
            as_agent(name, **spec)
        return str(json.loads(error.value.body)["message"])

    worker = as_agent("worker", ttl="5m", delegator=None)
    assert worker["spec"]["delegator"] == {"kind": "AgentIdentity", "name": "orchestrator"}
    ready = arena.cluster.wait_phase(arena.namespace, "worker", "Ready")
    assert ready["status"]["delegationChain"] == ["user:alice", f"agent:{arena.namespace}/orchestrator"]
    assert any(ref["uid"] == lead["metadata"]["uid"] for ref in ready["metadata"]["ownerReferences"])
    assert ready["status"]["expiresAt"] <= lead["status"]["expiresAt"]
    assert "agent-delegates-as-itself:" in refused("escapee", ttl="1m", delegator={"kind": "User", "name": "alice"})
    assert "delegate-not-outliving:" in refused("outliver", ttl="30m", delegator=None)
    assert "delegate-within-delegator:" in refused(
        "wider", ttl="1m", delegator=None, scopes=[{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]
    )


def test_a_delegate_cannot_escape_a_stricter_profile_above(arena: Arena) -> None:
    """Attack: under a delegator bound by a strict profile, name a laxer profile to widen the
    audiences or deepen the chain."""
    arena.ready(
        "alice", "strict-lead", profile=arena.strict, ttl="9m", scopes=[CM_READ], delegator={"kind": "User", "name": "alice"}
    )
    under = {"kind": "AgentIdentity", "name": "strict-lead"}
    message = arena.refusal("alice", "wide-audience", ttl="1m", scopes=[CM_GET], delegator=under, token={"audiences": ["b"]})
    assert "audiences-allowed:" in message and f"profile '{arena.strict}' (on the delegation chain above)" in message, message
    arena.ready("alice", "strict-mid", ttl="2m", scopes=[CM_GET], delegator=under)
    deep = arena.refusal(
        "alice", "too-deep", ttl="1m", scopes=[CM_GET], delegator={"kind": "AgentIdentity", "name": "strict-mid"}
    )
    assert "delegation-depth:" in deep and f"profile '{arena.strict}' (on the delegation chain above)" in deep, deep


def test_require_profile_refuses_an_identity_without_one(arena: Arena) -> None:
    message = arena.refusal("alice", "no-profile", profile=None, ttl="1m", scopes=[CM_GET])
    assert "profile-required:" in message, message


def test_an_over_wide_spec_is_refused_before_any_access_review(arena: Arena) -> None:
    """Attack: a spec that expands to thousands of permissions, each one a SubjectAccessReview."""
    wide = [{"apiGroups": ["", "apps"], "resources": [f"r{i}" for i in range(8)], "verbs": ["get", "list", "watch", "patch"]}] * 2
    message = arena.refusal("alice", "too-wide", ttl="1m", scopes=wide)
    assert "64" in message, message


# -- 3. revocation that cannot be dodged ---------------------------------------------------------------


def _assert_revoked_by_the_operator(arena: Arena, name: str, token: str, *, since: float) -> None:
    revoked = arena.cluster.wait_phase(arena.namespace, name, "Revoked")
    assert {c["type"]: c for c in revoked["status"]["conditions"]}["Ready"]["reason"] == "DelegatorGone"
    assert not any(arena.cluster.children(arena.namespace, name).values())
    revoked_after = time.monotonic() - since
    wait_for(f"{name}'s token to be refused", lambda: not arena.cluster.token_review(token)["authenticated"], timeout=20)
    refused_after = time.monotonic() - since
    print(f"\n{name}: revoked {revoked_after:.2f} s after its delegator went, token refused after {refused_after:.2f} s")


def _delegate_of_a_new_lead(arena: Arena, lead: str, name: str) -> str:
    arena.ready("alice", lead, ttl="10m", scopes=[CM_READ], delegator={"kind": "User", "name": "alice"})
    arena.ready("alice", name, ttl="5m", scopes=[CM_GET], delegator={"kind": "AgentIdentity", "name": lead})
    return arena.token(name)


def test_deleting_a_delegator_with_orphan_propagation_still_revokes_its_delegates(arena: Arena) -> None:
    """Attack: delete the delegator with ``propagationPolicy: Orphan``, so Kubernetes' garbage
    collector strips the delegate's ownerReference and leaves it alone, credentials and all."""
    token = _delegate_of_a_new_lead(arena, "orphan-lead", "orphaned")
    deleted_at = time.monotonic()
    arena.cluster.custom.delete_namespaced_custom_object(
        GROUP, VERSION, arena.namespace, PLURAL, "orphan-lead", body={"propagationPolicy": "Orphan"}
    )
    _assert_revoked_by_the_operator(arena, "orphaned", token, since=deleted_at)


def test_a_delegate_with_its_owner_reference_stripped_is_revoked_when_its_delegator_goes(arena: Arena) -> None:
    """Attack: strip the delegate's ownerReference (while the operator is down, so it cannot put
    it back), then delete the delegator: the garbage collector no longer knows they are related."""
    token = _delegate_of_a_new_lead(arena, "strip-lead", "unowned")
    unregister(arena.cluster)
    arena.operator.stop()
    try:
        arena.cluster.patch_identity(arena.namespace, "unowned", {"metadata": {"ownerReferences": None}})
        arena.cluster.delete_identity(arena.namespace, "strip-lead")
        wait_for("the delegator gone", lambda: arena.cluster.get_identity(arena.namespace, "strip-lead") is None)
        assert arena.cluster.phase(arena.namespace, "unowned") == "Ready"
    finally:
        started_at = time.monotonic()
        arena.operator.start()
        register_again(arena.cluster, arena.operator, exclude_namespace=arena.own)
    _assert_revoked_by_the_operator(arena, "unowned", token, since=started_at)


def test_stripped_children_are_still_the_identitys_and_are_revoked(arena: Arena) -> None:
    """Attack: strip the children's ownerReferences and labels so that neither the garbage
    collector nor a label selector finds them when the identity goes."""
    ready = arena.ready("alice", "stripme", scopes=[CM_GET], delegator={"kind": "User", "name": "alice"})
    recorded = ready["status"]["childUIDs"]
    core, rbac, ns = arena.cluster.core, arena.cluster.rbac, arena.namespace
    strip = {"metadata": {"ownerReferences": None, "labels": None}}
    core.patch_namespaced_service_account("aid-stripme", ns, strip)
    rbac.patch_namespaced_role("aid-stripme", ns, strip)
    rbac.patch_namespaced_role_binding("aid-stripme", ns, strip)
    core.patch_namespaced_secret("aid-stripme-token", ns, strip)

    reads = {
        "ServiceAccount": core.read_namespaced_service_account,
        "Role": rbac.read_namespaced_role,
        "RoleBinding": rbac.read_namespaced_role_binding,
    }

    def repaired() -> bool:
        # Each strip is its own change, so the claims back may take more than one reconcile.
        children = {kind: read("aid-stripme", ns) for kind, read in reads.items()}
        return all(c.metadata.owner_references and c.metadata.uid == recorded[kind] for kind, c in children.items())

    wait_for("the stripped children to be claimed back by their recorded uids", repaired)
    assert arena.cluster.phase(ns, "stripme") == "Ready"
    # strip again and delete at once: revocation goes by the recorded uids, not by references
    core.patch_namespaced_service_account("aid-stripme", ns, strip)
    rbac.patch_namespaced_role_binding("aid-stripme", ns, strip)
    arena.cluster.delete_identity(ns, "stripme")
    for kind, read, name in (
        ("ServiceAccount", core.read_namespaced_service_account, "aid-stripme"),
        ("Role", rbac.read_namespaced_role, "aid-stripme"),
        ("RoleBinding", rbac.read_namespaced_role_binding, "aid-stripme"),
        ("Secret", core.read_namespaced_secret, "aid-stripme-token"),
    ):
        wait_for(f"{kind} deleted", lambda read=read, name=name: arena.cluster.call_status(lambda: read(name, ns)) == 404)
    assert set(recorded) == {"ServiceAccount", "Role", "RoleBinding", "Secret"}


def test_a_finalizer_on_an_agents_service_account_delays_authentication_not_authorization(arena: Arena) -> None:
    """Attack: someone who may update ServiceAccounts and Secrets in the namespace puts a finalizer
    on an agent's ServiceAccount and token Secret, so revoking them only marks them deleted.

    What it buys them, measured: the API server keeps authenticating a token whose ServiceAccount
    (and bound Secret) is marked deleted for about 60 s; but the revocation deletes the agent's
    RoleBinding and Role in the same pass, so during that minute the token holds no permission."""
    core, ns = arena.cluster.core, arena.namespace
    arena.ready("alice", "held", scopes=[CM_READ], delegator={"kind": "User", "name": "alice"})
    token = arena.token("held")
    agent = arena.cluster.as_token(token)
    assert arena.cluster.call_status(lambda: agent.list_namespaced_config_map(ns)) == 200
    hold = {"metadata": {"finalizers": ["example.com/hold"]}}
    core.patch_namespaced_service_account("aid-held", ns, hold)
    core.patch_namespaced_secret("aid-held-token", ns, hold)
    try:
        revoked_at = time.monotonic()
        arena.cluster.delete_identity(ns, "held")
        wait_for(
            "the RoleBinding deleted",
            lambda: arena.cluster.call_status(lambda: arena.cluster.rbac.read_namespaced_role_binding("aid-held", ns)) == 404,
        )
        wait_for(
            "the agent's permissions gone",
            lambda: arena.cluster.call_status(lambda: agent.list_namespaced_config_map(ns)) == 403,
            timeout=15,
        )
        forbidden_after = time.monotonic() - revoked_at
        wait_for("the token refused", lambda: not arena.cluster.token_review(token)["authenticated"], timeout=90, interval=1)
        refused_after = time.monotonic() - revoked_at
        print(f"\nfinalizer hold: permissions gone after {forbidden_after:.1f} s, token refused after {refused_after:.1f} s")
    finally:
        release = {"metadata": {"finalizers": None}}
        released = [
            arena.cluster.call_status(lambda: core.patch_namespaced_service_account("aid-held", ns, release)),
            arena.cluster.call_status(lambda: core.patch_namespaced_secret("aid-held-token", ns, release)),
        ]
        assert set(released) <= {200, 404}, released
