"""Whether the workload an identity is bound to (spec.boundTo) has ended, from what the reconciler
observed of it. Pure: the reconciler reads the Job or the pods, this module judges them.

Only a workload that runs as this agent counts: a pod of its ServiceAccount (the pod guard and the
pod webhook let only its creator, its delegator or the agent itself start one), or a Job labelled
for it whose pod template carries this identity's uid, which the workload webhook writes only
after judging who asked. Anyone else's Job or pod of the same name is not the agent's workload and
ends nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from agent_identity.api.v1alpha1 import AgentIdentity, BindingKind
from agent_identity.plan.children import child_name
from agent_identity.plan.pods import judged_for, pod_identity

FINISHED_JOB_CONDITIONS = frozenset({"Complete", "Failed"})
TERMINATED_POD_PHASES = frozenset({"Succeeded", "Failed"})


@dataclass(frozen=True)
class TaskEnd:
    """``ended``: why the task is over (None: not yet). ``seen``: the workload's uid to record
    in status.boundWorkloadUID (so that its deletion or replacement later ends the task)."""

    ended: str | None
    seen: str | None


def runs_as_agent(identity: AgentIdentity, obj: Mapping[str, Any]) -> bool:
    """``obj`` (a pod or a Job) is this agent's workload, judged as its pods are."""
    if obj.get("kind") == "Job":
        metadata = obj.get("metadata") or {}
        return pod_identity(metadata) == identity.metadata.name and judged_for("Job", obj) == identity.metadata.uid
    return (obj.get("spec") or {}).get("serviceAccountName") == child_name(identity)


def finished(obj: Mapping[str, Any]) -> bool:
    if obj.get("kind") == "Job":
        conditions = (obj.get("status") or {}).get("conditions") or []
        return any(c.get("type") in FINISHED_JOB_CONDITIONS and c.get("status") == "True" for c in conditions)
    return (obj.get("status") or {}).get("phase") in TERMINATED_POD_PHASES


def _uid(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("uid", ""))


def task_end(identity: AgentIdentity, observed: Sequence[Mapping[str, Any]]) -> TaskEnd:
    """``observed``: the Job or Pod named by the binding (none if it does not exist), or every
    pod running as the agent (AgentPods)."""
    binding = identity.spec.bound_to
    recorded = identity.status.bound_workload_uid
    if binding is None:
        return TaskEnd(None, None)
    counted = [obj for obj in observed if runs_as_agent(identity, obj)]
    what = f"{binding.kind} {identity.metadata.namespace}/{binding.name}"
    if binding.kind is BindingKind.AGENT_PODS:
        live = [pod for pod in counted if not finished(pod)]
        if live:
            return TaskEnd(None, recorded or _uid(live[0]))
        if counted or recorded:
            return TaskEnd(f"spec.boundTo: every pod running as {child_name(identity)} has terminated", None)
        return TaskEnd(None, None)
    if not counted:
        return TaskEnd(f"spec.boundTo: {what} was deleted" if recorded else None, None)
    workload = counted[0]
    if recorded and _uid(workload) != recorded:
        return TaskEnd(f"spec.boundTo: {what} was replaced (uid {_uid(workload)}, not {recorded})", None)
    if finished(workload):
        verb = "finished" if binding.kind is BindingKind.JOB else "terminated"
        return TaskEnd(f"spec.boundTo: {what} {verb}", None)
    return TaskEnd(None, _uid(workload))
