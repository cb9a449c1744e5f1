"""Agent pods, pure parts: who may start one (policy.pods), what the webhook makes of it
(plan.pods), and the Projected delivery mode's writes (on the in-memory request layer). The
webhooks themselves are judged on the real API server in tests/e2e/test_agent_pods.py."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from agent_identity.engine.reconciler import Reconciler, Settings
from agent_identity.plan.children import ChildKind
from agent_identity.plan.pods import (
    TOKEN_MOUNT,
    VOLUME,
    WORKLOAD_PLURALS,
    MountTaken,
    agent_pod_spec,
    judged_for,
    judgement_patch,
    own_token_projections,
    templates,
)
from agent_identity.policy.facts import PolicySettings
from agent_identity.policy.pods import is_controller, judgement_problem, may_run_as
from agent_identity.policy.rules import Creator

from .factories import CREATED, identity, identity_body
from .fakekube import FakeKube

NOW = CREATED + timedelta(seconds=10)
READY = {"phase": "Ready", "expiresAt": "2026-11-28T12:01:30Z"}
ALICE = Creator(username="alice", uid="u-alice")


def rules(violations: list[Any]) -> list[str]:
    return [v.rule for v in violations]


@pytest.mark.parametrize(
    "requester",
    [
        "alice",  # the creator (the stamp, verified by the webhook)
        "bob",  # the delegator
        "system:serviceaccount:support:aid-crawler",  # the agent itself
    ],
)
def test_the_creator_the_delegator_and_the_agent_may_start_its_pods(requester: str) -> None:
    agent = identity(status=READY, delegator={"kind": "User", "name": "bob"})
    assert may_run_as(agent, Creator(username=requester), ALICE, now=NOW) == []


def test_anyone_else_is_refused_with_the_rule_named() -> None:
    agent = identity(status=READY, delegator=None)
    (refusal,) = may_run_as(agent, Creator(username="mallory"), ALICE, now=NOW)
    assert refusal.rule == "pod-runs-as-agent"
    assert "mallory may not start pods as AgentIdentity support/crawler" in refusal.message
    assert "only its creator or the agent itself (system:serviceaccount:support:aid-crawler) may" in refusal.message
    assert "alice" not in refusal.message  # who created it is not the requester's to learn


def test_the_refusal_names_the_delegator_by_role_only() -> None:
    agent = identity(status=READY, delegator={"kind": "User", "name": "bob"})
    (refusal,) = may_run_as(agent, Creator(username="mallory"), ALICE, now=NOW)
    assert "only its creator, its delegator or the agent itself" in refusal.message
    assert "bob" not in refusal.message and "alice" not in refusal.message


def test_a_creator_with_another_uid_is_someone_else_of_the_same_name() -> None:
    agent = identity(status=READY, delegator={"kind": "User", "name": "bob"})
    assert rules(may_run_as(agent, Creator(username="alice", uid="u-other"), ALICE, now=NOW)) == ["pod-runs-as-agent"]
    assert rules(may_run_as(agent, Creator(username="alice"), None, now=NOW)) == ["pod-runs-as-agent"]  # unverified stamp


def test_an_agent_delegator_runs_as_its_own_service_account() -> None:
    agent = identity(status=READY, delegator={"kind": "AgentIdentity", "name": "planner"})
    assert may_run_as(agent, Creator(username="system:serviceaccount:support:aid-planner"), None, now=NOW) == []
    assert rules(may_run_as(agent, Creator(username="planner"), None, now=NOW)) == ["pod-runs-as-agent"]


def test_only_a_ready_unexpired_identity_runs_pods() -> None:
    pending = identity(status={"phase": "Pending"})
    (refusal,) = may_run_as(pending, ALICE, ALICE, now=NOW)
    assert refusal.rule == "identity-ready" and "is Pending, not Ready" in refusal.message
    assert rules(may_run_as(identity(), ALICE, ALICE, now=NOW)) == ["identity-ready"]
    assert rules(may_run_as(identity(status=READY), ALICE, ALICE, now=CREATED + timedelta(minutes=5))) == ["identity-ready"]
    assert rules(may_run_as(identity(status={"phase": "Expired"}), Creator(username="x"), ALICE, now=NOW)) == [
        "pod-runs-as-agent",
        "identity-ready",
    ]


def test_only_the_built_in_controllers_are_controllers() -> None:
    assert is_controller(Creator(username="system:serviceaccount:kube-system:replicaset-controller"))
    assert is_controller(Creator(username="system:kube-controller-manager"))
    assert not is_controller(Creator(username="system:serviceaccount:support:replicaset-controller"))
    assert not is_controller(Creator(username="replicaset-controller"))


POD: dict[str, Any] = {
    "serviceAccountName": "default",
    "serviceAccount": "default",
    "containers": [
        {"name": "agent", "image": "agent", "volumeMounts": [{"name": "kube-api-access-x1", "mountPath": TOKEN_MOUNT}]},
        {"name": "sidecar", "image": "sidecar", "volumeMounts": [{"name": "data", "mountPath": "/data"}]},
    ],
    "volumes": [{"name": "kube-api-access-x1", "projected": {"sources": []}}, {"name": "data", "emptyDir": {}}],
}


def test_an_agent_pod_runs_as_the_agent_with_only_the_projected_volume() -> None:
    spec = agent_pod_spec(POD, identity(token={"audiences": ["vault", "mcp"]}), assertion=True)
    assert (spec["serviceAccountName"], spec["serviceAccount"], spec["automountServiceAccountToken"]) == (
        "aid-crawler",
        "aid-crawler",
        False,
    )
    assert [v["name"] for v in spec["volumes"]] == ["data", VOLUME]  # the default account's volume is gone
    for container in spec["containers"]:
        assert {"name": VOLUME, "mountPath": TOKEN_MOUNT, "readOnly": True} in container["volumeMounts"]
        assert all(not m["name"].startswith("kube-api-access-") for m in container["volumeMounts"])
    sources = spec["volumes"][-1]["projected"]["sources"]
    tokens = [s["serviceAccountToken"] for s in sources if "serviceAccountToken" in s]
    assert [(t["path"], t["audience"]) for t in tokens] == [("token", "vault"), ("token-1", "mcp")]
    assertion = {"name": "aid-crawler-token", "items": [{"key": "assertion", "path": "assertion"}], "optional": True}
    assert {"secret": assertion} in sources
    assert agent_pod_spec(spec, identity(token={"audiences": ["vault", "mcp"]}), assertion=True) == spec  # idempotent


def test_without_audiences_the_token_is_for_the_api_server_and_projected_mode_has_no_assertion() -> None:
    spec = agent_pod_spec(POD, identity(token={"delivery": "Projected"}), assertion=True)
    sources = spec["volumes"][-1]["projected"]["sources"]
    assert sources[0] == {"serviceAccountToken": {"path": "token", "expirationSeconds": 600}}
    assert not [s for s in sources if "secret" in s]


def test_a_container_mounting_something_else_where_the_token_goes_is_refused() -> None:
    taken = {**POD, "containers": [{"name": "agent", "volumeMounts": [{"name": "data", "mountPath": TOKEN_MOUNT + "/"}]}]}
    with pytest.raises(MountTaken, match="container 'agent' mounts volume 'data'"):
        agent_pod_spec(taken, identity(), assertion=False)


def test_a_cron_jobs_job_template_and_pod_template_both_reach_its_pods() -> None:
    cron = {"spec": {"jobTemplate": {"metadata": {"labels": {"a": "b"}}, "spec": {"template": {"metadata": {}}}}}}
    assert list(templates("CronJob", cron)) == ["spec.jobTemplate", "spec.jobTemplate.spec.template"]
    assert list(templates("Deployment", {"spec": {"template": {}}})) == ["spec.template"]


def merged(body: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """``patch`` applied as a JSON merge patch (what the API server does with the webhook's)."""
    result = dict(body)
    for key, value in patch.items():
        result[key] = merged(result.get(key) or {}, value) if isinstance(value, dict) else value
    return result


@pytest.mark.parametrize("kind", sorted(kind for _, kind in WORKLOAD_PLURALS))
def test_the_identity_a_workload_was_judged_for_is_recorded_where_its_pods_come_from(kind: str) -> None:
    pod_template = {"metadata": {"labels": {"app": "a"}, "annotations": {"keep": "me"}}, "spec": {}}
    body = (
        {"spec": {"jobTemplate": {"spec": {"template": pod_template}}}}
        if kind == "CronJob"
        else {"spec": {"template": pod_template}}
    )
    assert judged_for(kind, body) is None
    stamped = merged(body, judgement_patch(kind, "uid-1"))
    assert judged_for(kind, stamped) == "uid-1"
    template = stamped["spec"]["jobTemplate"]["spec"]["template"] if kind == "CronJob" else stamped["spec"]["template"]
    assert template["metadata"]["annotations"]["keep"] == "me" and template["metadata"]["labels"] == {"app": "a"}
    # What its controller makes from that template carries the record: a pod its annotations.
    assert judged_for("Pod", {"metadata": template["metadata"]}) == "uid-1"


def test_a_controllers_object_serves_only_the_identity_its_workload_was_judged_for() -> None:
    current = identity()
    assert judgement_problem(current, current.metadata.uid, made_by="ReplicaSet support/w") is None
    for recorded, says in (("uid-of-a-predecessor", "for an earlier AgentIdentity"), (None, "without a record")):
        problem = judgement_problem(current, recorded, made_by="ReplicaSet support/w")
        assert problem is not None and problem.rule == "workload-judged-for-identity"
        assert says in problem.message and current.metadata.uid in problem.message and "rollout restart" in problem.message


def test_only_the_identitys_own_volume_may_project_a_token() -> None:
    token = {"serviceAccountToken": {"audience": "sts.amazonaws.com", "expirationSeconds": 31_536_000}}
    spec = {
        "volumes": [
            {"name": "data", "emptyDir": {}},
            {"name": "cloud", "projected": {"sources": [{"configMap": {"name": "c"}}, token]}},
            {"name": VOLUME, "projected": {"sources": [token]}},  # replaced by the webhook's own
            {"name": "kube-api-access-x1", "projected": {"sources": [token]}},  # the default account's: dropped
        ]
    }
    assert own_token_projections(spec) == ["cloud"]
    assert own_token_projections({"volumes": spec["volumes"][2:]}) == []
    stored = agent_pod_spec({"volumes": spec["volumes"][2:], "containers": [{"name": "a"}]}, identity(), assertion=False)
    (volume,) = stored["volumes"]
    assert all(
        s["serviceAccountToken"]["expirationSeconds"] == 600 for s in volume["projected"]["sources"] if "serviceAccountToken" in s
    )


def test_projected_delivery_is_four_writes_and_keeps_no_token_at_rest() -> None:
    kube = FakeKube()
    kube.identities[("support", "crawler")] = identity_body(token={"delivery": "Projected"})
    reconciler = Reconciler(
        kube,  # type: ignore[arg-type]
        settings=Settings(policy=PolicySettings(require_creator=False)),
        clock=lambda: NOW,
        lookup_identity=kube.get_identity,
        lookup_profile=kube.get_profile,
    )
    reconciler.reconcile(kube.get_identity("support", "crawler") or {})
    status = kube.identities[("support", "crawler")]["status"]
    assert status["phase"] == "Ready" and "tokenSecretName" not in status and "tokenExpiresAt" not in status
    writes = [request for request in kube.requests if request[0] != "GET"]
    assert len(writes) + len(kube.events) == 4, (writes, kube.events)
    assert kube.child(ChildKind.TOKEN_SECRET, "support", "aid-crawler-token") is None
    assert set(status["childUIDs"]) == {"ServiceAccount", "Role", "RoleBinding"}
