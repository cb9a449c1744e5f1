"""The audit trail against the real API server: the operator links every record into one hash
chain per shard, signs checkpoints with its signing keys, keeps the head in the ConfigMap
agent-identity-audit, and the chain stays contiguous across a clean restart, a SIGKILL and a
leader change. ``kubectl agent audit verify`` verifies the files offline, and names what an
insider with the files did to them."""

from __future__ import annotations

import json
from pathlib import Path

from kubernetes import client

from agent_identity.keys.subjects import SECRET_NAME as SUBJECTS_SECRET
from support.cluster import OPERATOR_NAMESPACE, Cluster, impersonated, make_identity, wait_for
from support.leases import holder, holding
from support.operator_process import OperatorProcess
from support.trail import audit_verify, evidence, kubectl_agent, records, stored_head, trail_args


def provision(cluster: Cluster, namespace: str, *names: str) -> None:
    for name in names:
        cluster.create_identity(make_identity(name, namespace))
    for name in names:
        cluster.wait_phase(namespace, name, "Ready")


def test_the_chain_continues_across_a_restart_and_a_crash_and_verifies_offline(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    audit_file = tmp_path / "audit.log"
    operator = OperatorProcess(
        kubeconfig=cluster.kubeconfig, namespace=namespace, log_dir=tmp_path, extra_args=trail_args(namespace, audit_file)
    )
    operator.start()
    try:
        provision(cluster, namespace, "one", "two")
        operator.stop()  # SIGTERM: the head is signed at shutdown
        assert stored_head(cluster, namespace)["seq"] == len(records(audit_file)) - 1  # every record, one checkpoint line
        operator.start()
        provision(cluster, namespace, "three")
        cluster.delete_identity(namespace, "one")
        wait_for("one revoked", lambda: any(r.get("action") == "revoked" for r in records(audit_file)))
        wait_for("a checkpoint after the revocation", lambda: "checkpoint" in records(audit_file)[-1])
        provision(cluster, namespace, "four")
        operator.kill()  # SIGKILL: "four" may be after the last checkpoint
        operator.start()
        provision(cluster, namespace, "five")
    finally:
        operator.stop()

    lines = records(audit_file)
    chained = [line for line in lines if "chain" in line]
    assert {line["chain"]["shard"] for line in chained} == {namespace}
    assert len({line["chain"]["writer"] for line in chained}) == 3  # one writer per process
    jwks, stored = evidence(cluster, namespace, tmp_path)
    result = audit_verify(str(audit_file), "--jwks", str(jwks), "--checkpoint", str(stored), "-o", "json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["verified"] is True and report["problems"] == []
    assert report["shards"][namespace]["signedUpTo"] == stored_head(cluster, namespace)["seq"] == chained[-1]["chain"]["seq"]
    # Every seq from 1 to the head, none skipped (records after the crash's last checkpoint, if
    # any, were superseded by the next writer: the report notes them).
    assert {line["chain"]["seq"] for line in chained} == set(range(1, chained[-1]["chain"]["seq"] + 1))
    assert not any(token in audit_file.read_text() for token in ("eyJhbGciOiJSUzI1NiIs",))  # no ServiceAccount token

    # The insider with the file: one record's delegator edited, one record deleted, the tail cut.
    text = audit_file.read_text().splitlines(keepends=True)
    index = next(i for i, line in enumerate(text) if '"name":"three"' in line)
    tampered = tmp_path / "edited.log"
    tampered.write_text("".join([*text[:index], text[index].replace('"task":"', '"task":"also ', 1), *text[index + 1 :]]))
    result = audit_verify(str(tampered), "--jwks", str(jwks))
    assert result.returncode == 1 and f"edited.log:{index + 1}" in result.stderr and "was edited" in result.stderr
    deleted = tmp_path / "deleted.log"
    deleted.write_text("".join([*text[:index], *text[index + 1 :]]))
    result = audit_verify(str(deleted), "--jwks", str(jwks))
    assert result.returncode == 1 and "were removed" in result.stderr
    cut = tmp_path / "cut.log"
    cut.write_text("".join(text[: index + 1]))
    assert audit_verify(str(cut), "--jwks", str(jwks)).returncode == 0  # alone: an unsigned tail
    result = audit_verify(str(cut), "--jwks", str(jwks), "--checkpoint", str(stored))
    assert result.returncode == 1 and "tail cut" in result.stderr


def test_a_new_leader_resumes_the_chain_from_the_stored_head(cluster: Cluster, namespace: str, tmp_path: Path) -> None:
    """Two replicas, each with its own file: the leader dies by SIGKILL, the standby takes over and
    continues from the head the leader stored; both files, read in turn, verify as one chain."""
    args = ["--leader-election", "--leader-election-namespace", namespace, "--lease-duration", "4s"]
    replicas = {}
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        replicas[name] = OperatorProcess(
            kubeconfig=cluster.kubeconfig,
            namespace=namespace,
            log_dir=tmp_path / name,
            extra_args=[*args, *trail_args(namespace, tmp_path / name / "audit.log")],
        )
        replicas[name].start()
    try:
        provision(cluster, namespace, "before")
        leader = holding(wait_for("a leader", lambda: holder(cluster.api_client, namespace)), replicas.values())
        first_file = leader.log_dir / "audit.log"
        wait_for("a checkpoint", lambda: any("checkpoint" in r for r in records(first_file)))
        leader.kill()
        provision(cluster, namespace, "after")
        survivor = next(r for r in replicas.values() if r is not leader)
        second_file = survivor.log_dir / "audit.log"
        wait_for("the new leader's checkpoint", lambda: any("checkpoint" in r for r in records(second_file)))
    finally:
        for replica in replicas.values():
            replica.stop()

    first, second = records(first_file), records(second_file)
    assert second[0]["chain"]["prev"] in {r.get("hash") for r in first}  # resumed after a record of the first leader
    jwks, stored = evidence(cluster, namespace, tmp_path)
    result = audit_verify(str(first_file), str(second_file), "--jwks", str(jwks), "--checkpoint", str(stored), "-o", "json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    head = stored_head(cluster, namespace)
    assert head["writer"] == second[-2]["chain"]["writer"] != first[0]["chain"]["writer"]
    assert report["shards"][namespace]["signedUpTo"] == head["seq"] == second[-2]["chain"]["seq"]  # signed at its stop
    assert {r["name"] for r in [*first, *second] if r.get("name")} >= {"before", "after"}
    result = audit_verify(str(second_file), str(first_file), "--jwks", str(jwks))  # in the wrong order
    assert result.returncode == 1


def test_a_person_forgotten_is_unreadable_in_every_record_and_the_chain_still_verifies(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    """Alice's and Bob's names never reach the trail; ``audit forget user:alice`` destroys her key:
    the same file still verifies, her records no longer reveal her, Bob's still do. A user who
    holds ``edit`` in the served namespace can neither read the people's keys nor forget anyone."""
    alice, bob = f"alice-{namespace}", f"bob-{namespace}"  # names the shared key Secret has not seen
    audit_file = tmp_path / "audit.log"
    operator = OperatorProcess(
        kubeconfig=cluster.kubeconfig, namespace=namespace, log_dir=tmp_path, extra_args=trail_args(namespace, audit_file)
    )
    operator.start()
    try:
        cluster.create_identity(make_identity("for-alice", namespace, delegator={"kind": "User", "name": alice}))
        cluster.create_identity(make_identity("for-bob", namespace, delegator={"kind": "User", "name": bob}))
        for name in ("for-alice", "for-bob"):
            cluster.wait_phase(namespace, name, "Ready")
    finally:
        operator.stop()
    written = audit_file.read_text()
    assert alice not in written and bob not in written
    mine = [r for r in records(audit_file) if r.get("name") == "for-alice"]
    assert mine and all(r["delegator"].startswith("subject:") for r in mine)

    revealed = kubectl_agent(cluster, "audit", "reveal", str(audit_file))
    assert revealed.returncode == 0, revealed.stderr
    shown = {json.loads(line)["name"]: json.loads(line) for line in revealed.stdout.splitlines() if '"name"' in line}
    assert shown["for-alice"]["delegator"] == f"user:{alice}" and shown["for-bob"]["delegationChain"] == [f"user:{bob}"]

    # The attacker: edit in the served namespace, nothing in the operator's.
    cluster.bind_cluster_role(namespace, "mallory", "edit")
    assert (
        cluster.call_status(
            lambda: client.CoreV1Api(impersonated(cluster, "mallory")).read_namespaced_secret(SUBJECTS_SECRET, OPERATOR_NAMESPACE)
        )
        == 403
    )
    assert (
        cluster.call_status(
            lambda: client.CoreV1Api(impersonated(cluster, "mallory")).delete_namespaced_secret(
                SUBJECTS_SECRET, OPERATOR_NAMESPACE
            )
        )
        == 403
    )

    forgot = kubectl_agent(cluster, "audit", "forget", f"user:{alice}", "-o", "json")
    assert forgot.returncode == 0, forgot.stderr
    subject = json.loads(forgot.stdout)["subject"]
    assert all(r["delegator"] == subject for r in mine)
    again = kubectl_agent(cluster, "audit", "forget", f"user:{alice}")
    assert again.returncode == 1 and "has no key" in again.stderr

    revealed = kubectl_agent(cluster, "audit", "reveal", str(audit_file))
    assert alice not in revealed.stdout and f"user:{bob}" in revealed.stdout
    assert f"{subject} (forgotten)" in revealed.stdout
    jwks, stored = evidence(cluster, namespace, tmp_path)
    result = audit_verify(str(audit_file), "--jwks", str(jwks), "--checkpoint", str(stored))
    assert result.returncode == 0, result.stderr  # the file was never touched: the chain holds
    secret = cluster.core.read_namespaced_secret(SUBJECTS_SECRET, OPERATOR_NAMESPACE)
    assert not any(alice in field or bob in field for field in secret.data)


def test_records_the_operator_cannot_link_yet_wait_and_are_linked_in_order(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    """The operator's namespace (where the head and the people's keys live) does not exist yet:
    provisioning goes on, the records wait, and once it exists they are linked, in the order they
    were emitted, by the next checkpoint."""
    home = f"{namespace}-home"
    audit_file = tmp_path / "audit.log"
    args = [*trail_args(namespace, audit_file), "--operator-namespace", home]
    operator = OperatorProcess(kubeconfig=cluster.kubeconfig, namespace=namespace, log_dir=tmp_path, extra_args=args)
    operator.start()
    try:
        provision(cluster, namespace, "first", "second")  # reconciles do not fail for the trail
        assert records(audit_file) == []
        wait_for("the wait logged", lambda: "records wait" in operator.output(), timeout=15)
        cluster.ensure_namespace(home)
        wait_for("the records linked", lambda: len(records(audit_file)) >= 4, timeout=30)
    finally:
        operator.stop()
        cluster.delete_namespace(home)
    linked = [r for r in records(audit_file) if "chain" in r]
    assert [r["chain"]["seq"] for r in linked] == list(range(1, len(linked) + 1))
    assert {(r["name"], r["action"]) for r in linked} >= {("first", "provisioned"), ("second", "provisioned")}
    jwks = tmp_path / "jwks.json"
    jwks.write_text(cluster.core.read_namespaced_config_map("agent-identity-jwks", namespace).data["jwks.json"])
    result = audit_verify(str(audit_file), "--jwks", str(jwks))
    assert result.returncode == 0, result.stderr
