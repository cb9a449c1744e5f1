"""Who may start a pod as an agent. Pure.

Kubernetes' default is that anyone who may create pods in a namespace may run them as any
ServiceAccount there. For an agent's account that is not good enough: a pod runs as the agent only
when the person (or workload) asking is the identity's **creator**, its **delegator**, or the
**agent itself**, and only while the identity is **Ready**.

Pods are often made by controllers (a Deployment's ReplicaSet, a Job), whose requests carry the
controller's user, not the workload author's. As policy engines do for pod controllers, the author
is judged when the workload itself is admitted (the workload webhook matches workloads that carry
the identity label themselves), and a request from one of the built-in controllers, for an object
it controls on behalf of an owner, is judged by that owner: it must carry the same label, which
means it was judged when it was admitted.
"""

from __future__ import annotations

from datetime import datetime

from agent_identity.api.durations import parse_timestamp
from agent_identity.api.v1alpha1 import AgentIdentity, Phase
from agent_identity.policy.rules import Creator, Violation, agent_username, delegator_username

# The users the kube-controller-manager's workload controllers act as: its own (without
# --use-service-account-credentials) or one ServiceAccount per controller in kube-system.
CONTROLLER_USERS = frozenset(
    {"system:kube-controller-manager"}
    | {
        f"system:serviceaccount:kube-system:{controller}"
        for controller in (
            "replicaset-controller",
            "deployment-controller",
            "statefulset-controller",
            "daemon-set-controller",
            "job-controller",
            "cronjob-controller",
            "replication-controller",
        )
    }
)


def is_controller(requester: Creator) -> bool:
    return requester.username in CONTROLLER_USERS


def served_problem(namespace: str, served: tuple[str, ...]) -> Violation | None:
    """Identities in a namespace this operator does not serve are never provisioned: say so,
    rather than that they are not Ready yet."""
    if not served or namespace in served:
        return None
    return Violation(
        "namespace-served",
        f"namespace {namespace!r} is not served by this operator (it serves {', '.join(served)}): no AgentIdentity"
        " there is ever provisioned, so no pod there runs as one",
    )


def ready_problem(identity: AgentIdentity, *, now: datetime) -> Violation | None:
    """An agent's pods start only while it is Ready (not before, not after its expiry)."""
    where = f"AgentIdentity {identity.metadata.namespace}/{identity.metadata.name}"
    status = identity.status
    if status.phase != Phase.READY:
        why = next((c.message for c in status.conditions or () if c.type == "Ready"), "not provisioned yet")
        return Violation(
            "identity-ready", f"{where} is {status.phase or Phase.PENDING}, not Ready ({why}): start its pods once it is Ready"
        )
    if status.expires_at and parse_timestamp(status.expires_at) <= now:
        return Violation("identity-ready", f"{where} expired at {status.expires_at}")
    return None


def judgement_problem(identity: AgentIdentity, judged_for: str | None, *, made_by: str) -> Violation | None:
    """What a controller makes serves only the identity its workload was judged for (by uid),
    never a later identity of the same name."""
    if judged_for == identity.metadata.uid:
        return None
    namespace, name = identity.metadata.namespace, identity.metadata.name
    judged = "for an earlier AgentIdentity of that name" if judged_for else "without a record of the identity it was judged for"
    return Violation(
        "workload-judged-for-identity",
        f"{made_by} was admitted {judged}, not for AgentIdentity {namespace}/{name} (uid {identity.metadata.uid}): a"
        " workload serves only the identity it was judged for. To re-admit it, its creator or delegator changes its pod"
        " template (kubectl rollout restart, or re-apply it with a change) or re-creates it (a Job)",
    )


def runner_problem(identity: AgentIdentity, requester: Creator, creator: Creator | None) -> Violation | None:
    """Only the creator (the sealed stamp, verified by the caller), the delegator or the agent
    itself may run pods as the agent."""
    namespace, name = identity.metadata.namespace, identity.metadata.name
    allowed = [agent_username(namespace, name)]
    delegator = identity.spec.delegator
    if delegator is not None:
        allowed.append(
            agent_username(namespace, delegator.name)
            if delegator.kind == "AgentIdentity"
            else delegator_username(delegator, namespace)
        )
    if creator is not None and (not creator.uid or not requester.uid or creator.uid == requester.uid):
        allowed.append(creator.username)
    if requester.username in allowed:
        return None
    # The refusal names nobody but the requester and the agent: who created or delegated it is not
    # the requester's to learn.
    delegated = ", its delegator" if delegator is not None else ""
    return Violation(
        "pod-runs-as-agent",
        f"{requester.username} may not start pods as AgentIdentity {namespace}/{name}: only its creator{delegated}"
        f" or the agent itself ({allowed[0]}) may",
    )


def may_run_as(identity: AgentIdentity, requester: Creator, creator: Creator | None, *, now: datetime) -> list[Violation]:
    """Everything that stops ``requester`` from starting a pod as ``identity``; empty: allowed."""
    return [v for v in (runner_problem(identity, requester, creator), ready_problem(identity, now=now)) if v]
