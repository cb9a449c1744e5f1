"""What the pod webhooks decide: agent pods, and the workloads that make them.

- mutating, pods labelled ``agentidentity.dev/identity`` (CREATE): judge who asks (see
  :mod:`agent_identity.policy.pods`), then make the pod run as the agent with a projected token
  (:mod:`agent_identity.plan.pods`);
- validating, Deployments, ReplicaSets, StatefulSets, DaemonSets, Jobs, CronJobs and
  ReplicationControllers that carry the label themselves (CREATE, and UPDATE of the templates or the
  label): judge who asks, and insist the templates carry the same label.

Both configurations select objects by the label (``objectSelector``), so every other pod and
workload never reaches the operator: an operator outage cannot block them. A pod that names an
agent's ServiceAccount without the label is refused by the API server itself (the pod guard, a
ValidatingAdmissionPolicy, :func:`pod_guard_policy`).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from agent_identity.admission.identity import Admission, Refused, Request, creator_from_userinfo
from agent_identity.api.v1alpha1 import AgentIdentity
from agent_identity.kube.client import KubeError
from agent_identity.plan.children import LABEL_IDENTITY
from agent_identity.plan.decisions import parse_identity
from agent_identity.plan.pods import MountTaken, agent_pod_spec, controller_of, pod_identity, templates
from agent_identity.policy.pods import is_controller, may_run_as, ready_problem, served_problem
from agent_identity.policy.rules import Violation

POD_PATH = "mutate-pod"
WORKLOAD_PATH = "validate-workload"
POD_GUARD = "agent-identity-pod-guard"


def admit_pod(admission: Admission, request: Request) -> dict[str, Any] | None:
    """The pod spec to store for an agent pod (None: not an agent pod), created or given an
    ephemeral container (which could read its token: judged the same way). Raises :class:`Refused`."""
    metadata = request.body.get("metadata") or {}
    name = pod_identity(metadata)
    if name is None:
        return None
    identity = _identity(admission, str(metadata.get("namespace", "")), name, now=request.now, subject="agent pod")
    _judge(admission, identity, request, subject="agent pod")
    try:
        return agent_pod_spec(request.body.get("spec") or {}, identity, assertion=admission.signing)
    except MountTaken as taken:
        raise Refused([Violation("token-mount-free", str(taken))]) from None


def review_workload(admission: Admission, request: Request) -> None:
    """A workload that names an agent: its templates name the same one, and whoever asks may run
    it (judged again whenever the templates or the label change). Raises :class:`Refused`."""
    body = request.body
    metadata, kind = body.get("metadata") or {}, str(body.get("kind", ""))
    name = pod_identity(metadata)
    if name is None:
        return
    unlabelled = [
        path for path, template in templates(kind, body).items() if pod_identity(template.get("metadata") or {}) != name
    ]
    if unlabelled:
        raise Refused(
            subject=kind,
            violations=[
                Violation(
                    "template-labelled",
                    f"{kind} {metadata.get('name')} is labelled {LABEL_IDENTITY}={name} but {unlabelled[0]} is not:"
                    " label its templates the same, or what it creates would not run as the agent",
                )
            ],
        )
    if request.operation == "UPDATE" and request.old is not None and _runs_the_same(kind, request.old, body):
        return  # scaling, a controller's annotations: nothing about what runs as the agent changed
    identity = _identity(admission, str(metadata.get("namespace", "")), name, now=request.now, subject=kind)
    _judge(admission, identity, request, subject=kind)


def _runs_the_same(kind: str, old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    return pod_identity(old.get("metadata") or {}) == pod_identity(new.get("metadata") or {}) and templates(
        kind, old
    ) == templates(kind, new)


def _identity(admission: Admission, namespace: str, name: str, *, now: datetime, subject: str) -> AgentIdentity:
    """The named identity, from the cache; read again from the API server when the cache does
    not (yet) have it Ready, so an identity that just became Ready is never refused for lag."""
    served = served_problem(namespace, admission.settings.served_namespaces)
    if served:
        raise Refused([served], subject=subject)
    body = admission.lookup(namespace, name)
    identity = parse_identity(body) if body else None
    if not isinstance(identity, AgentIdentity) or ready_problem(identity, now=now):
        try:
            body = admission.kube.get_identity(namespace, name)
        except KubeError as error:
            unreadable = Violation("identity-readable", f"AgentIdentity {namespace}/{name} could not be read: {error.reason}")
            raise Refused([unreadable], subject=subject) from None
        identity = parse_identity(body) if body else None
    if not isinstance(identity, AgentIdentity):
        missing = Violation("identity-exists", f"{LABEL_IDENTITY}: there is no AgentIdentity {namespace}/{name}")
        raise Refused([missing], subject=subject)
    return identity


def _judge(admission: Admission, identity: AgentIdentity, request: Request, *, subject: str) -> None:
    requester, now = creator_from_userinfo(request.userinfo), request.now
    owner = controller_of(request.body.get("metadata") or {}) if is_controller(requester) else None
    if owner is not None:  # a built-in controller acting for its workload: judge the workload
        violations = [v for v in (_owner_problem(admission, identity, owner), ready_problem(identity, now=now)) if v]
    else:
        violations = may_run_as(identity, requester, admission.sealer.creator_of(identity), now=now)
    if violations:
        raise Refused(violations, subject=subject)


def _owner_problem(admission: Admission, identity: AgentIdentity, owner: Mapping[str, Any]) -> Violation | None:
    """The owner exists (this very one: same uid) and carries the label itself, so it was judged
    when it was admitted."""
    namespace, name = identity.metadata.namespace, identity.metadata.name
    what = f"{owner.get('kind')} {namespace}/{owner.get('name')}"
    workload = admission.kube.get_workload(
        namespace, api_version=str(owner.get("apiVersion")), kind=str(owner.get("kind")), name=str(owner.get("name"))
    )
    if workload is None or workload["metadata"].get("uid") != owner.get("uid"):
        return Violation("workload-judged", f"{what}, which controls it, is not a workload this operator judges (or is gone)")
    if pod_identity(workload["metadata"]) != name:
        return Violation(
            "workload-judged",
            f"{what} does not carry the label {LABEL_IDENTITY}={name} itself, so nobody was judged for running it as the"
            " agent: label the workload, not only its template",
        )
    return None


# -- the configurations ---------------------------------------------------------------------------


def _foreign_token(reference: str) -> str:
    """CEL: ``reference`` names an agent's token Secret other than this pod's own agent's."""
    return f"({reference}.startsWith('aid-') && {reference}.endsWith('-token') && {reference} != variables.agent + '-token')"


def _reads_foreign_token(containers: str) -> str:
    """CEL: one of ``containers`` takes an environment variable from another agent's token Secret."""
    return (
        f"{containers}.exists(c, c.?env.orValue([]).exists(e, has(e.valueFrom) && has(e.valueFrom.secretKeyRef)"
        f" && {_foreign_token('e.valueFrom.secretKeyRef.name')})"
        f" || c.?envFrom.orValue([]).exists(f, has(f.secretRef) && {_foreign_token('f.secretRef.name')}))"
    )


def pod_guard_policy() -> list[dict[str, Any]]:
    """A ValidatingAdmissionPolicy and its binding, evaluated by the API server itself (no
    operator outage opens it), on pods created and ephemeral containers added:

    - a pod runs as an agent's ServiceAccount (``aid-*``) only if it carries the matching label,
      which only the pod webhook lets through (after judging who asks);
    - a pod reads an agent's token Secret (``aid-*-token``: a volume, a projected source, an
      environment variable) only if it is that agent's pod: otherwise anyone who may create pods
      could read any agent's token (Kubernetes' default for every Secret).
    """
    agent = (
        f"has(object.metadata.labels) && '{LABEL_IDENTITY}' in object.metadata.labels"
        f" ? 'aid-' + object.metadata.labels['{LABEL_IDENTITY}'] : ''"
    )
    volume_secret, projected_secret = "v.secret.?secretName.orValue('')", "s.secret.?name.orValue('')"
    volumes = (
        "object.spec.?volumes.orValue([]).exists(v,"
        f" (has(v.secret) && {_foreign_token(volume_secret)})"
        " || (has(v.projected) && v.projected.?sources.orValue([]).exists(s,"
        f" has(s.secret) && {_foreign_token(projected_secret)})))"
    )
    readers = [
        volumes,
        _reads_foreign_token("object.spec.containers"),
        _reads_foreign_token("object.spec.?initContainers.orValue([])"),
        _reads_foreign_token("object.spec.?ephemeralContainers.orValue([])"),
    ]
    rules = [
        {"apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"], "operations": ["CREATE"]},
        {"apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods/ephemeralcontainers"], "operations": ["UPDATE"]},
    ]
    return [
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicy",
            "metadata": {"name": POD_GUARD},
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": {"resourceRules": rules},
                "variables": [{"name": "agent", "expression": agent}],
                "validations": [
                    {
                        "expression": (
                            "!has(object.spec.serviceAccountName) || !object.spec.serviceAccountName.startsWith('aid-')"
                            " || variables.agent == object.spec.serviceAccountName"
                        ),
                        "messageExpression": (
                            "'a pod runs as an agent\\'s ServiceAccount ' + object.spec.serviceAccountName"
                            f" + ' only through its AgentIdentity: label it {LABEL_IDENTITY}='"
                            " + object.spec.serviceAccountName.substring(4)"
                            " + ' (the operator then checks that you may) instead of naming the ServiceAccount'"
                        ),
                        "reason": "Forbidden",
                    },
                    {
                        "expression": " && ".join(f"!{reader}" for reader in readers),
                        "message": (
                            "an agent's token Secret (aid-<name>-token) is read only by that agent's own pods"
                            f" (labelled {LABEL_IDENTITY}=<name>): refused a volume, projected source or"
                            " environment variable that refers to another's"
                        ),
                        "reason": "Forbidden",
                    },
                ],
            },
        },
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {"name": POD_GUARD},
            "spec": {"policyName": POD_GUARD, "validationActions": ["Deny"]},
        },
    ]
