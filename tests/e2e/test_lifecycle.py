"""Retirement, revocation, delegation and recovery, each checked against the real API server."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from agent_identity.engine import failpoints
from support.cluster import SELF_RETIRE_RULE, Cluster, make_identity, wait_for
from support.operator_process import OperatorProcess

REVOCATION_WINDOW_S = 15  # the API server caches a successful token authentication for 10 s


def parse(ts: str) -> datetime:
    return datetime.fromisoformat(ts.replace("Z", "+00:00"))


def no_children(cluster: Cluster, namespace: str, name: str) -> bool:
    return not any(cluster.children(namespace, name).values())


def wait_rejected(cluster: Cluster, token: str) -> float:
    """Seconds until TokenReview rejects the token and a real call with it is refused."""
    started = time.monotonic()
    agent = cluster.as_token(token)
    wait_for(
        "TokenReview to reject the token",
        lambda: not cluster.token_review(token)["authenticated"],
        timeout=REVOCATION_WINDOW_S,
        interval=0.5,
    )
    wait_for(
        "a real call to be refused with 401",
        lambda: cluster.call_status(lambda: agent.list_namespaced_config_map("default")) == 401,
        timeout=REVOCATION_WINDOW_S,
        interval=0.5,
    )
    return time.monotonic() - started


def test_at_its_ttl_the_identity_expires_and_its_token_stops_working(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    cluster.create_identity(make_identity("short", namespace, ttl="10s"))
    ready = cluster.wait_phase(namespace, "short", "Ready")
    token = cluster.token_secret(namespace, "short")["token"]
    assert cluster.token_review(token)["authenticated"] is True

    expired = cluster.wait_phase(namespace, "short", "Expired", timeout=20)
    retired_at = datetime.now(UTC)
    deadline = parse(ready["status"]["expiresAt"])
    assert (retired_at - deadline).total_seconds() < 3, "retired late"
    assert no_children(cluster, namespace, "short")
    conditions = {c["type"]: c for c in expired["status"]["conditions"]}
    assert conditions["Expired"]["status"] == "True" and conditions["Expired"]["reason"] == "TTLElapsed"
    assert conditions["Ready"]["status"] == "False"
    wait_rejected(cluster, token)
    assert "TTLElapsed" in wait_for("an Expired event", lambda: cluster.events(namespace, "short"))


def test_deleting_an_identity_revokes_at_once(cluster: Cluster, namespace: str, operator: OperatorProcess) -> None:
    cluster.create_identity(make_identity("revoked", namespace))
    cluster.wait_phase(namespace, "revoked", "Ready")
    token = cluster.token_secret(namespace, "revoked")["token"]
    cluster.delete_identity(namespace, "revoked")
    wait_for("children deleted", lambda: no_children(cluster, namespace, "revoked"), timeout=5)
    wait_rejected(cluster, token)
    assert any(
        line["action"] == "revoked" and line["name"] == "revoked"
        for line in wait_for(
            "the revoked audit line", lambda: [entry for entry in operator.audit_lines() if entry["action"] == "revoked"]
        )
    )


def test_a_delegates_chain_extends_its_delegators_and_it_retires_with_it(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    # Same TTL, created within one second: the delegates end exactly when the planner does (a
    # later end would be denied: a delegate never outlives its delegator).
    wait_for("the start of a second", lambda: datetime.now(UTC).microsecond < 100_000, interval=0.01)
    cluster.create_identity(
        make_identity(
            "planner",
            namespace,
            ttl="15s",
            scopes=[{"apiGroups": [""], "resources": ["configmaps", "events"], "verbs": ["get", "list"]}],
        )
    )
    cluster.create_identity(
        make_identity("crawler", namespace, ttl="15s", delegator={"kind": "AgentIdentity", "name": "planner"})
    )
    cluster.create_identity(
        make_identity(
            "fetcher",
            namespace,
            ttl="15s",
            delegator={"kind": "AgentIdentity", "name": "crawler"},
            scopes=[{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}],
        )
    )
    planner = cluster.wait_phase(namespace, "planner", "Ready")
    crawler = cluster.wait_phase(namespace, "crawler", "Ready")
    fetcher = cluster.wait_phase(namespace, "fetcher", "Ready")
    assert crawler["status"]["delegationChain"] == ["user:alice", f"agent:{namespace}/planner"]
    assert fetcher["status"]["delegationChain"] == ["user:alice", f"agent:{namespace}/planner", f"agent:{namespace}/crawler"]
    assert crawler["status"]["expiresAt"] == fetcher["status"]["expiresAt"] == planner["status"]["expiresAt"]
    owners = cluster.get_identity(namespace, "crawler")["metadata"]["ownerReferences"]  # type: ignore[index]
    assert [(o["kind"], o["uid"]) for o in owners] == [("AgentIdentity", planner["metadata"]["uid"])]

    tokens = [cluster.token_secret(namespace, n)["token"] for n in ("crawler", "fetcher")]
    for name in ("planner", "crawler", "fetcher"):
        cluster.wait_phase(namespace, name, "Expired", timeout=25)
    retired = [cluster.get_identity(namespace, n)["status"]["conditions"] for n in ("planner", "crawler", "fetcher")]  # type: ignore[index]
    transition = {c["lastTransitionTime"] for conditions in retired for c in conditions if c["type"] == "Expired"}
    assert len(transition) == 1, f"delegates retired at different moments: {transition}"
    for token in tokens:
        wait_rejected(cluster, token)


def test_deleting_a_delegator_deletes_its_delegates(cluster: Cluster, namespace: str, operator: OperatorProcess) -> None:
    cluster.create_identity(make_identity("parent", namespace))
    cluster.create_identity(make_identity("child", namespace, delegator={"kind": "AgentIdentity", "name": "parent"}))
    cluster.wait_phase(namespace, "child", "Ready")
    cluster.delete_identity(namespace, "parent")
    wait_for("the delegate gone with its delegator", lambda: cluster.get_identity(namespace, "child") is None, timeout=20)
    wait_for("the delegate's credentials gone", lambda: no_children(cluster, namespace, "child"), timeout=10)


def test_a_delegate_of_a_missing_delegator_waits_pending_then_proceeds(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    cluster.create_identity(make_identity("early", namespace, delegator={"kind": "AgentIdentity", "name": "late"}))
    pending = cluster.wait_phase(namespace, "early", "Pending")
    ready = {c["type"]: c for c in pending["status"]["conditions"]}["Ready"]
    assert ready["reason"] == "DelegatorNotReady" and "does not exist" in ready["message"]
    assert no_children(cluster, namespace, "early")
    cluster.create_identity(make_identity("late", namespace))
    cluster.wait_phase(namespace, "early", "Ready", timeout=15)


@pytest.mark.parametrize(
    "failpoint",
    ["after-serviceaccount", "after-role", "after-rolebinding", "after-secret", "after-token-request", "after-token"],
)
def test_killed_mid_provisioning_the_operator_converges_with_one_of_each_child(
    cluster: Cluster, namespace: str, operator: OperatorProcess, failpoint: str
) -> None:
    operator.stop()
    operator.start(failpoint=failpoint)
    cluster.create_identity(make_identity("crashy", namespace))
    assert operator.wait_exit() == failpoints.EXIT_CODE, "the operator did not reach the failpoint"
    operator.start()
    cluster.wait_phase(namespace, "crashy", "Ready", timeout=30)
    assert cluster.children(namespace, "crashy") == {
        "ServiceAccount": ["aid-crashy"],
        "Role": ["aid-crashy"],
        "RoleBinding": ["aid-crashy"],
        "Secret": ["aid-crashy-token"],
    }
    token = cluster.token_secret(namespace, "crashy")["token"]
    assert cluster.token_review(token)["authenticated"] is True
    provisioned = wait_for(
        "the audit line, right after the Ready status",
        lambda: [entry for entry in operator.audit_lines() if entry["action"] == "provisioned" and entry["name"] == "crashy"],
    )
    assert len(provisioned) == 1


def test_drifted_children_are_restored(cluster: Cluster, namespace: str, operator: OperatorProcess) -> None:
    cluster.create_identity(make_identity("drift", namespace))
    cluster.wait_phase(namespace, "drift", "Ready")
    old_token = cluster.token_secret(namespace, "drift")["token"]

    cluster.rbac.patch_namespaced_role(
        "aid-drift", namespace, {"rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]}
    )
    wait_for(
        "the widened Role narrowed again",
        lambda: (
            [(r.resources, r.verbs) for r in cluster.rbac.read_namespaced_role("aid-drift", namespace).rules]
            == [(["configmaps"], ["get", "list"]), SELF_RETIRE_RULE[1:]]
        ),
        timeout=10,
    )

    cluster.rbac.delete_namespaced_role_binding("aid-drift", namespace)
    wait_for(
        "the RoleBinding recreated", lambda: cluster.children(namespace, "drift")["RoleBinding"] == ["aid-drift"], timeout=10
    )

    cluster.core.patch_namespaced_service_account("aid-drift", namespace, {"automountServiceAccountToken": True})
    wait_for(
        "automount switched off again",
        lambda: cluster.core.read_namespaced_service_account("aid-drift", namespace).automount_service_account_token is False,
        timeout=10,
    )

    cluster.core.delete_namespaced_secret("aid-drift-token", namespace)
    new_token = wait_for(
        "a fresh token in a new Secret",
        lambda: cluster.token_secret(namespace, "drift").get("token") if cluster.children(namespace, "drift")["Secret"] else None,
        timeout=10,
    )
    assert new_token != old_token
    assert cluster.token_review(new_token)["authenticated"] is True
    wait_rejected(cluster, old_token)  # bound to the deleted Secret
    assert cluster.phase(namespace, "drift") == "Ready"


def test_drift_while_the_operator_was_down_is_repaired_after_it_starts(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    """Settled identities are re-verified in the background lane after a restart: still repaired."""
    cluster.create_identity(make_identity("drift-down", namespace))
    ready = cluster.wait_phase(namespace, "drift-down", "Ready")
    operator.stop()
    cluster.rbac.patch_namespaced_role(
        "aid-drift-down", namespace, {"rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]}
    )
    cluster.rbac.delete_namespaced_role_binding("aid-drift-down", namespace)
    operator.start()
    wait_for(
        "the Role widened while down narrowed again",
        lambda: (
            [r.verbs for r in cluster.rbac.read_namespaced_role("aid-drift-down", namespace).rules]
            == [["get", "list"], ["patch"]]
        ),
        timeout=15,
    )
    wait_for(
        "the RoleBinding deleted while down recreated",
        lambda: cluster.children(namespace, "drift-down")["RoleBinding"] == ["aid-drift-down"],
        timeout=15,
    )
    identity = cluster.get_identity(namespace, "drift-down")
    assert identity is not None
    assert identity["status"]["phase"] == "Ready"
    assert identity["status"]["expiresAt"] == ready["status"]["expiresAt"]


def test_an_operator_that_was_down_past_a_deadline_retires_at_start(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    cluster.create_identity(make_identity("overdue", namespace, ttl="10s"))
    ready = cluster.wait_phase(namespace, "overdue", "Ready")
    operator.stop()
    deadline = parse(ready["status"]["expiresAt"])
    time.sleep(max(0.0, (deadline - datetime.now(UTC)).total_seconds()) + 2)
    assert cluster.phase(namespace, "overdue") == "Ready"  # nobody retired it while the operator was down
    restarted = time.monotonic()
    operator.start()
    cluster.wait_phase(namespace, "overdue", "Expired", timeout=20)
    assert time.monotonic() - restarted < 10
    assert no_children(cluster, namespace, "overdue")


def test_expired_records_are_removed_after_the_retention_period(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    operator.stop()
    operator.start(extra_args=["--retain-for", "3s"])
    cluster.create_identity(make_identity("retained", namespace, ttl="10s"))
    cluster.wait_phase(namespace, "retained", "Expired", timeout=20)
    expired_at = time.monotonic()
    wait_for("the record removed", lambda: cluster.get_identity(namespace, "retained") is None, timeout=15)
    assert time.monotonic() - expired_at >= 2
