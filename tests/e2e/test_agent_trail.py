"""``kubectl agent trail NAME`` against the real API server's audit log: an agent's in-scope and
out-of-scope calls, in order, with the right outcomes; nothing of another agent, even one that
reuses the name later; a call made after the identity retired stands out."""

from __future__ import annotations

import json
import time
from pathlib import Path

from support.cluster import Cluster, audit_log, make_identity, wait_for
from support.operator_process import OperatorProcess
from support.trail import kubectl_agent


def trail(cluster: Cluster, namespace: str, name: str, log: Path) -> dict:
    logs = sorted(str(path) for path in log.parent.glob("audit*.log"))
    result = kubectl_agent(cluster, "-n", namespace, "trail", name, *(f"--audit-log={path}" for path in logs), "-o", "json")
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


def test_the_trail_lists_exactly_the_agents_calls_with_their_outcomes(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    log = audit_log(cluster, "the agent's requests")
    for name in ("worker", "other"):
        cluster.create_identity(make_identity(name, namespace, ttl="10m"))
    for name in ("worker", "other"):
        cluster.wait_phase(namespace, name, "Ready")
    worker = cluster.as_token(cluster.token_secret(namespace, "worker")["token"])
    other = cluster.as_token(cluster.token_secret(namespace, "other")["token"])

    assert cluster.call_status(lambda: worker.list_namespaced_config_map(namespace)) == 200  # in scope
    assert cluster.call_status(lambda: worker.list_namespaced_secret(namespace)) == 403  # probing beyond it
    assert cluster.call_status(lambda: worker.delete_namespaced_config_map("kube-root-ca.crt", namespace)) == 403
    assert cluster.call_status(lambda: other.list_namespaced_pod(namespace)) == 403  # another agent's probe

    wanted = [("list", "configmaps", 200), ("list", "secrets", 403), ("delete", "configmaps", 403)]

    def seen() -> dict | None:
        document = trail(cluster, namespace, "worker", log)
        return document if len(document["requests"]) >= len(wanted) else None

    document = wait_for("the audit log to hold the calls", seen, timeout=20)
    got = [(r["verb"], r["target"].split()[0], r["code"]) for r in document["requests"]]
    assert got == wanted  # exactly these, in order: nothing of "other", nothing of the operator
    assert [r["forbidden"] for r in document["requests"]] == [False, True, True]
    assert document["forbidden"] == 2 and document["afterRetirement"] == 0
    assert all(r["credential"] and r["credential"].startswith("JTI=") for r in document["requests"])
    assert document["task"] == "test task for worker" and document["retired_at"] is None
    status = cluster.get_identity(namespace, "worker")["status"]
    assert document["service_account_uid"] == status["serviceAccountUID"]
    assert document["delegation_chain"] == status["delegationChain"]


def test_a_call_after_retirement_stands_out(cluster: Cluster, namespace: str, operator: OperatorProcess) -> None:
    """The token is used once the identity expired. A call the API server still authenticates (its
    token cache) is the ServiceAccount's: refused, since the RoleBinding is gone, and marked after
    retirement. A call it no longer authenticates (401: the local control plane checks the deleted
    ServiceAccount at once) names nobody and so is in no trail. The marking itself is proven on
    events in tests/unit/test_actions.py."""
    log = audit_log(cluster, "the agent's requests")
    cluster.create_identity(make_identity("late", namespace, ttl="10s"))
    cluster.wait_phase(namespace, "late", "Ready")
    agent = cluster.as_token(cluster.token_secret(namespace, "late")["token"])
    assert cluster.call_status(lambda: agent.list_namespaced_config_map(namespace)) == 200
    cluster.wait_phase(namespace, "late", "Expired", timeout=20)
    time.sleep(1.1)  # conditions keep whole seconds: every call below is after the retirement's second
    late = [cluster.call_status(lambda: agent.list_namespaced_config_map(namespace)) for _ in range(3)]
    assert set(late) <= {401, 403}
    refused_late = late.count(403)

    def logged() -> dict | None:
        document = trail(cluster, namespace, "late", log)
        return document if len(document["requests"]) >= 1 + refused_late else None

    document = wait_for("the late calls logged", logged, timeout=20)
    assert document["retired_at"] is not None
    assert [r["after_retirement"] for r in document["requests"]] == [False] + [True] * refused_late
    assert document["afterRetirement"] == refused_late
    assert [r["code"] for r in document["requests"]] == [200] + [403] * refused_late


def test_a_name_reused_by_a_new_identity_does_not_inherit_the_old_trail(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    log = audit_log(cluster, "the agent's requests")
    cluster.create_identity(make_identity("reused", namespace, ttl="10m"))
    cluster.wait_phase(namespace, "reused", "Ready")
    first = cluster.as_token(cluster.token_secret(namespace, "reused")["token"])
    assert cluster.call_status(lambda: first.list_namespaced_config_map(namespace)) == 200
    wait_for("the first call logged", lambda: trail(cluster, namespace, "reused", log)["requests"], timeout=20)
    cluster.delete_identity(namespace, "reused")
    wait_for("reused gone", lambda: cluster.get_identity(namespace, "reused") is None, timeout=20)

    cluster.create_identity(make_identity("reused", namespace, ttl="10m"))  # same name, same ServiceAccount name
    cluster.wait_phase(namespace, "reused", "Ready")
    second = cluster.as_token(cluster.token_secret(namespace, "reused")["token"])
    assert cluster.call_status(lambda: second.list_namespaced_secret(namespace)) == 403

    def second_seen() -> dict | None:
        document = trail(cluster, namespace, "reused", log)
        return document if document["requests"] else None

    document = wait_for("the second identity's call logged", second_seen, timeout=20)
    assert [(r["verb"], r["target"].split()[0], r["code"]) for r in document["requests"]] == [("list", "secrets", 403)]
