"""What the pod webhooks decide: agent pods, and the workloads that make them.

- mutating, pods labelled ``agentidentity.dev/identity`` (CREATE): judge who asks (see
  :mod:`agent_identity.policy.pods`), then make the pod run as the agent with a projected token
  (:mod:`agent_identity.plan.pods`);
- mutating, Deployments, ReplicaSets, StatefulSets, DaemonSets, Jobs, CronJobs and
  ReplicationControllers that carry the label themselves (CREATE, and UPDATE of the templates or the
  label): judge who asks, insist the templates carry the same label, and record on the pod template
  the uid of the identity it was judged for.

A pod or workload a built-in controller makes is judged by its controlling owner: the owner carries
the label (so it was judged), and what the controller makes carries the uid of the very identity of
that name now (so a workload judged for a predecessor never serves its successor).

Both configurations select objects by the label (``objectSelector``), so every other pod and
workload never reaches the operator: an operator outage cannot block them. What the API server
itself refuses, whoever asks, is the pod guard (a ValidatingAdmissionPolicy, :func:`pod_guard_policy`).
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
from agent_identity.plan.pods import (
    PROJECTED_TOKEN_SECONDS,
    VOLUME,
    MountTaken,
    agent_pod_spec,
    controller_of,
    judged_for,
    judgement_patch,
    own_token_projections,
    pod_identity,
    templates,
)
from agent_identity.policy.pods import is_controller, judgement_problem, may_run_as, ready_problem, served_problem
from agent_identity.policy.rules import Violation

POD_PATH = "mutate-pod"
WORKLOAD_PATH = "mutate-workload"
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
    _refuse_own_tokens(request.body.get("spec") or {}, identity, where="the pod", subject="agent pod")
    try:
        return agent_pod_spec(request.body.get("spec") or {}, identity, assertion=admission.signing)
    except MountTaken as taken:
        raise Refused([Violation("token-mount-free", str(taken))]) from None


def admit_workload(admission: Admission, request: Request) -> dict[str, Any] | None:
    """A workload that names an agent: its templates name the same one, and whoever asks may run
    it (judged again whenever the templates or the label change). Returns the merge patch that
    records the identity it was judged for (None: nothing judged, nothing to record). Raises
    :class:`Refused`."""
    body = request.body
    metadata, kind = body.get("metadata") or {}, str(body.get("kind", ""))
    name = pod_identity(metadata)
    if name is None:
        return None
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
    for path, template in templates(kind, body).items():
        _refuse_own_tokens(template.get("spec") or {}, None, where=path, subject=kind)
    if request.operation == "UPDATE" and request.old is not None and _runs_the_same(kind, request.old, body):
        return None  # scaling, a controller's annotations: nothing about what runs as the agent changed
    identity = _identity(admission, str(metadata.get("namespace", "")), name, now=request.now, subject=kind)
    if _judge(admission, identity, request, subject=kind):
        return judgement_patch(kind, identity.metadata.uid)
    return None


def _refuse_own_tokens(spec: Mapping[str, Any], identity: AgentIdentity | None, *, where: str, subject: str) -> None:
    """An agent pod carries only the tokens its identity allows: none of its own projection."""
    volumes = own_token_projections(spec)
    if not volumes:
        return
    audiences = ", ".join(identity.spec.audiences) if identity is not None and identity.spec.audiences else None
    allowed = f"its audiences ({audiences})" if audiences else "the audiences in its spec.token.audiences"
    raise Refused(
        [
            Violation(
                "tokens-from-identity",
                f"{where}: volume {volumes[0]!r} projects a service account token of its own; an agent pod gets its"
                f" tokens from the AgentIdentity only ({allowed}, at most {PROJECTED_TOKEN_SECONDS}s each): remove it",
            )
        ],
        subject=subject,
    )


def _runs_the_same(kind: str, old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    return pod_identity(old.get("metadata") or {}) == pod_identity(new.get("metadata") or {}) and templates(
        kind, old
    ) == templates(kind, new)


def _identity(
    admission: Admission, namespace: str, name: str, *, now: datetime, subject: str, fresh: bool = False
) -> AgentIdentity:
    """The named identity, from the cache unless ``fresh``; read from the API server when the
    cache does not (yet) have it Ready, so an identity that just became Ready is never refused for lag."""
    served = served_problem(namespace, admission.settings.served_namespaces)
    if served:
        raise Refused([served], subject=subject)
    body = None if fresh else admission.lookup(namespace, name)
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


def _judge(admission: Admission, identity: AgentIdentity, request: Request, *, subject: str) -> bool:
    """Raises :class:`Refused` unless the request may make the object run as ``identity``.
    True: the requester was judged; False: a built-in controller, judged by its workload."""
    requester, now, body = creator_from_userinfo(request.userinfo), request.now, request.body
    owner = controller_of(body.get("metadata") or {}) if is_controller(requester) else None
    if owner is None:
        violations = may_run_as(identity, requester, admission.sealer.creator_of(identity), now=now)
    else:  # what the controller makes serves the identity of that name now, never one the cache outlived
        namespace, name = identity.metadata.namespace, identity.metadata.name
        identity = _identity(admission, namespace, name, now=now, subject=subject, fresh=True)
        what = f"{owner.get('kind')} {namespace}/{owner.get('name')}"
        problems = (
            _owner_problem(admission, identity, owner, what=what),
            judgement_problem(identity, judged_for(str(body.get("kind", "")), body), made_by=what),
            ready_problem(identity, now=now),
        )
        violations = [v for v in problems if v]
    if violations:
        raise Refused(violations, subject=subject)
    return owner is None


def _owner_problem(admission: Admission, identity: AgentIdentity, owner: Mapping[str, Any], *, what: str) -> Violation | None:
    """The owner exists (this very one: same uid) and carries the label itself, so it was judged
    when it was admitted."""
    namespace, name = identity.metadata.namespace, identity.metadata.name
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


# Legacy token Secrets: the kube-controller-manager's token controller fills any Secret of this
# type with a token that never expires, for the ServiceAccount the annotation names.
LEGACY_TOKEN_TYPE = "kubernetes.io/service-account-token"
LEGACY_TOKEN_ACCOUNT = "kubernetes.io/service-account.name"


def _for(resource: str, rule: str) -> str:
    """CEL: ``rule`` holds for requests on ``resource`` (the guard sees pods and Secrets)."""
    return f"request.resource.resource != '{resource}' || ({rule})"


def _images(pod: str, field: str) -> str:
    return f"{pod}.spec.?{field}.orValue([]).map(c, c.image)"


def pod_guard_policy() -> list[dict[str, Any]]:
    """A ValidatingAdmissionPolicy and its binding, evaluated by the API server itself (no
    operator outage opens it), for every subject, the operator included:

    - a pod runs as an agent's ServiceAccount (``aid-*``) only if it carries the matching label,
      which only the pod webhook lets through (after judging who asks), and keeps that label;
    - a pod reads an agent's token Secret (``aid-*-token``: a volume, a projected source, an
      environment variable) only if it is that agent's pod: otherwise anyone who may create pods
      could read any agent's token (Kubernetes' default for every Secret);
    - an agent pod keeps the images it was admitted with (keyed on the stored pod's account);
    - an agent pod carries service account tokens only in the volume the pod webhook writes, and
      none longer-lived than it asks for;
    - no Secret asks the token controller for a legacy, non-expiring token of an agent's account;
    - an agent's heartbeat Lease (``aid-<name>-heartbeat``) is renewed by that agent alone.
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
    was_agent = "request.operation == 'UPDATE' && oldObject.spec.?serviceAccountName.orValue('').startsWith('aid-')"
    same_images = " && ".join(
        f"{_images('object', field)} == {_images('oldObject', field)}" for field in ("containers", "initContainers")
    )
    own_tokens = (
        "object.spec.?volumes.orValue([]).all(v, !has(v.projected) || v.projected.?sources.orValue([]).all(s,"
        f" !has(s.serviceAccountToken) || (v.name == '{VOLUME}'"
        f" && s.serviceAccountToken.?expirationSeconds.orValue(3600) <= {PROJECTED_TOKEN_SECONDS})))"
    )
    legacy_token = (
        f"object.?type.orValue('') == '{LEGACY_TOKEN_TYPE}' && has(object.metadata.annotations)"
        f" && '{LEGACY_TOKEN_ACCOUNT}' in object.metadata.annotations"
        f" && object.metadata.annotations['{LEGACY_TOKEN_ACCOUNT}'].startsWith('aid-')"
    )
    rules = [
        {"apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"], "operations": ["CREATE", "UPDATE"]},
        {"apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods/ephemeralcontainers"], "operations": ["UPDATE"]},
        {"apiGroups": [""], "apiVersions": ["v1"], "resources": ["secrets"], "operations": ["CREATE", "UPDATE"]},
        {"apiGroups": ["coordination.k8s.io"], "apiVersions": ["v1"], "resources": ["leases"], "operations": ["UPDATE"]},
    ]
    heartbeat = "request.name.startsWith('aid-') && request.name.endsWith('-heartbeat')"
    its_agent = "'system:serviceaccount:' + request.namespace + ':' + request.name.substring(0, size(request.name) - 10)"
    validations = [
        {
            "expression": _for(
                "pods",
                "!has(object.spec.serviceAccountName) || !object.spec.serviceAccountName.startsWith('aid-')"
                " || variables.agent == object.spec.serviceAccountName",
            ),
            "messageExpression": (
                "'a pod runs as an agent\\'s ServiceAccount ' + object.spec.serviceAccountName"
                f" + ' only through its AgentIdentity: label it {LABEL_IDENTITY}='"
                " + object.spec.serviceAccountName.substring(4)"
                " + ' (the operator then checks that you may) instead of naming the ServiceAccount;'"
                " + ' do not change or remove that label on a running agent pod'"
            ),
        },
        {
            "expression": _for("pods", " && ".join(f"!{reader}" for reader in readers)),
            "message": (
                "an agent's token Secret (aid-<name>-token) is read only by that agent's own pods"
                f" (labelled {LABEL_IDENTITY}=<name>): refused a volume, projected source or"
                " environment variable that refers to another's"
            ),
        },
        {
            "expression": _for("pods", f"!({was_agent}) || ({same_images})"),
            "messageExpression": (
                "'pod ' + object.metadata.name + ' runs as agent ' + oldObject.spec.serviceAccountName"
                " + ': its images are the ones it was admitted with; to run other code as the agent, create a new pod'"
            ),
        },
        {
            "expression": _for("pods", f"!object.spec.?serviceAccountName.orValue('').startsWith('aid-') || {own_tokens}"),
            "message": (
                "an agent pod carries only the service account tokens its AgentIdentity allows, in the volume"
                f" {VOLUME!r} the operator writes (at most {PROJECTED_TOKEN_SECONDS}s each): remove the other"
                " serviceAccountToken projection (set spec.token.audiences on the AgentIdentity instead)"
            ),
        },
        {
            "expression": _for("leases", f"!({heartbeat}) || request.userInfo.username == {its_agent}"),
            "messageExpression": (
                "'the heartbeat Lease ' + request.name + ' is renewed only by its agent, '"
                f" + {its_agent} + ': nobody else keeps a crashed agent alive'"
            ),
        },
        {
            "expression": _for("secrets", f"!({legacy_token})"),
            "messageExpression": (
                f"'a Secret of type {LEGACY_TOKEN_TYPE} for agent ServiceAccount '"
                f" + object.metadata.annotations['{LEGACY_TOKEN_ACCOUNT}']"
                " + ' would hold a token that never expires: agents get short-lived tokens from their AgentIdentity'"
                " + ' (spec.token), never a legacy token Secret'"
            ),
        },
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
                "validations": [{**validation, "reason": "Forbidden"} for validation in validations],
            },
        },
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {"name": POD_GUARD},
            "spec": {"policyName": POD_GUARD, "validationActions": ["Deny"]},
        },
    ]
