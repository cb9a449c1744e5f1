"""spec.boundTo (#33 part 1), the pure judgement: which workload counts as the agent's, and when
its end is the task's end."""

from __future__ import annotations

from typing import Any

import pytest

from agent_identity.api.conditions import Reason
from agent_identity.plan.decisions import Retire, decide
from agent_identity.plan.workload import task_end

from .factories import CREATED, identity

JUDGED = "agentidentity.dev/judged-for-uid"


def job(
    *, uid: str = "job-1", judged: str | None = "uid-crawler", label: str | None = "crawler", done: str | None = None
) -> dict[str, Any]:
    template = {"metadata": {"annotations": {JUDGED: judged} if judged else {}}}
    conditions = [{"type": done, "status": "True"}] if done else []
    labels = {"agentidentity.dev/identity": label} if label else {}
    return {
        "kind": "Job",
        "metadata": {"uid": uid, "labels": labels},
        "spec": {"template": template},
        "status": {"conditions": conditions},
    }


def pod(*, uid: str = "pod-1", account: str = "aid-crawler", phase: str = "Running") -> dict[str, Any]:
    return {"kind": "Pod", "metadata": {"uid": uid}, "spec": {"serviceAccountName": account}, "status": {"phase": phase}}


def bound(kind: str, name: str | None = "work", seen: str | None = None) -> Any:
    binding = {"kind": kind} | ({"name": name} if name else {})
    return identity(boundTo=binding, status={"boundWorkloadUID": seen} if seen else None)


@pytest.mark.parametrize("condition", ["Complete", "Failed"])
def test_a_finished_job_that_runs_as_the_agent_ends_the_task(condition: str) -> None:
    end = task_end(bound("Job"), [job(done=condition)])
    assert end.ended is not None and "finished" in end.ended


def test_a_running_job_is_recorded_and_ends_nothing() -> None:
    assert task_end(bound("Job"), [job()]) == type(task_end(bound("Job"), []))(None, "job-1")


@pytest.mark.parametrize(
    "foreign",
    [job(done="Complete", judged=None), job(done="Complete", judged="uid-someone-else"), job(done="Complete", label=None)],
)
def test_someone_elses_job_of_that_name_ends_nothing(foreign: dict[str, Any]) -> None:
    assert task_end(bound("Job"), [foreign]).ended is None


def test_a_job_deleted_or_replaced_after_it_was_seen_ends_the_task() -> None:
    deleted = task_end(bound("Job", seen="job-1"), []).ended
    replaced = task_end(bound("Job", seen="job-1"), [job(uid="job-2")]).ended
    assert deleted is not None and "deleted" in deleted
    assert replaced is not None and "replaced" in replaced
    assert task_end(bound("Job"), []).ended is None  # not created yet: wait


def test_a_pod_binding_ends_when_its_pod_terminates_and_only_an_agent_pod_counts() -> None:
    assert task_end(bound("Pod"), [pod(phase="Succeeded")]).ended is not None
    assert task_end(bound("Pod"), [pod(phase="Pending")]).ended is None
    assert task_end(bound("Pod"), [pod(phase="Succeeded", account="default")]).ended is None


def test_agent_pods_end_when_the_last_one_terminated_after_one_ran() -> None:
    agents = bound("AgentPods", name=None)
    assert task_end(agents, []).ended is None  # none ran yet
    assert task_end(agents, [pod(phase="Succeeded"), pod(uid="pod-2")]).ended is None
    assert task_end(agents, [pod(phase="Succeeded"), pod(uid="pod-2", phase="Failed")]).ended is not None
    assert task_end(bound("AgentPods", name=None, seen="pod-1"), []).ended is not None  # all deleted


def test_the_decision_retires_with_task_completed_now() -> None:
    decision = decide(bound("Job"), delegator=None, now=CREATED, task_ended="spec.boundTo: Job support/work finished")
    assert isinstance(decision, Retire) and decision.reason is Reason.TASK_COMPLETED
    assert decision.provenance.expires_at == CREATED
