"""An agent pod: what the pod webhook makes of a pod that names its AgentIdentity. Pure.

A pod opts in with the label ``agentidentity.dev/identity: <name>``. It then runs as the agent's
ServiceAccount ``aid-<name>`` with nothing mounted implicitly, and one projected volume, mounted
where every Kubernetes client looks (``/var/run/secrets/kubernetes.io/serviceaccount``), holding:

- ``token``: a token the kubelet requests for this pod and rotates (at 80 % of its life), bound to
  the pod and to the ServiceAccount, so it dies with either; for the identity's first audience, or
  the API server's own when it names none. Further audiences get ``token-1``, ``token-2``, ... in
  the order of ``spec.token.audiences`` (a projected token has one audience);
- ``ca.crt`` and ``namespace``, as in the volume Kubernetes mounts by default;
- ``assertion``: the signed delegation assertion, when the identity keeps a token Secret that
  holds one (``spec.token.delivery: Secret`` with signing on).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agent_identity.api.v1alpha1 import AgentIdentity, TokenDelivery
from agent_identity.plan.children import ANNOTATION_JUDGED_FOR, LABEL_IDENTITY, child_name, token_secret_name

TOKEN_MOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"
VOLUME = "agent-identity"
# The shortest expiry the API server accepts; the kubelet rotates it at 80 %. The token's life
# barely matters: it stops working when the ServiceAccount goes, at the identity's expiry.
PROJECTED_TOKEN_SECONDS = 600
# The volume the ServiceAccount admission plugin mounts (for the pod's original account) before
# any webhook runs: it would carry the default account's token, so it goes.
DEFAULT_TOKEN_VOLUME_PREFIX = "kube-api-access-"
# Pod controllers whose pods can be agents, by (apiVersion, kind): their plural.
WORKLOAD_PLURALS: dict[tuple[str, str], str] = {
    ("apps/v1", "Deployment"): "deployments",
    ("apps/v1", "ReplicaSet"): "replicasets",
    ("apps/v1", "StatefulSet"): "statefulsets",
    ("apps/v1", "DaemonSet"): "daemonsets",
    ("batch/v1", "Job"): "jobs",
    ("batch/v1", "CronJob"): "cronjobs",
    ("v1", "ReplicationController"): "replicationcontrollers",
}


class MountTaken(ValueError):
    """A container already mounts something where the agent's token goes."""


def pod_identity(metadata: Mapping[str, Any]) -> str | None:
    """The AgentIdentity a pod (or a workload, or a template) names, if it names one."""
    value = (metadata.get("labels") or {}).get(LABEL_IDENTITY)
    return str(value) if value else None


def templates(kind: str, body: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """A workload's templates whose labels reach what it creates, by field path: a CronJob's Job
    template and that Job's pod template; every other kind's pod template."""
    spec = body.get("spec") or {}
    if kind == "CronJob":
        job = spec.get("jobTemplate") or {}
        return {"spec.jobTemplate": job, "spec.jobTemplate.spec.template": (job.get("spec") or {}).get("template") or {}}
    return {"spec.template": spec.get("template") or {}}


def _pod_template_path(kind: str) -> tuple[str, ...]:
    return ("spec", "jobTemplate", "spec", "template") if kind == "CronJob" else ("spec", "template")


def judged_for(kind: str, body: Mapping[str, Any]) -> str | None:
    """The uid of the AgentIdentity a pod, or the pods a workload makes, were judged for."""
    node: Mapping[str, Any] = body
    for key in () if kind == "Pod" else _pod_template_path(kind):
        node = node.get(key) or {}
    value = ((node.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_JUDGED_FOR)
    return str(value) if value else None


def judgement_patch(kind: str, identity_uid: str) -> dict[str, Any]:
    """A merge patch recording, on a workload's pod template, the identity it was judged for:
    every object and pod its controllers make from that template carries it."""
    patch: dict[str, Any] = {"metadata": {"annotations": {ANNOTATION_JUDGED_FOR: identity_uid}}}
    for key in reversed(_pod_template_path(kind)):
        patch = {key: patch}
    return patch


def controller_of(metadata: Mapping[str, Any]) -> dict[str, Any] | None:
    """The ownerReference of the object's controller, if it has one."""
    return next((ref for ref in metadata.get("ownerReferences") or [] if ref.get("controller")), None)


def _replaced(volume: Mapping[str, Any]) -> bool:
    """The agent's own volume and the default account's: :func:`agent_pod_spec` replaces both."""
    name = str(volume.get("name", ""))
    return name == VOLUME or name.startswith(DEFAULT_TOKEN_VOLUME_PREFIX)


def own_token_projections(spec: Mapping[str, Any]) -> list[str]:
    """The volumes of a pod spec that project a service account token and that the agent pod
    would keep: tokens of an audience and lifetime the identity never allowed."""
    return [
        str(volume.get("name"))
        for volume in spec.get("volumes") or []
        if not _replaced(volume)
        and any("serviceAccountToken" in source for source in (volume.get("projected") or {}).get("sources") or [])
    ]


def token_sources(identity: AgentIdentity) -> list[dict[str, Any]]:
    audiences: list[str | None] = list(identity.spec.audiences) or [None]
    sources = []
    for index, audience in enumerate(audiences):
        token: dict[str, Any] = {
            "path": "token" if index == 0 else f"token-{index}",
            "expirationSeconds": PROJECTED_TOKEN_SECONDS,
        }
        if audience is not None:
            token["audience"] = audience
        sources.append({"serviceAccountToken": token})
    return sources


def agent_volume(identity: AgentIdentity, *, assertion: bool) -> dict[str, Any]:
    sources = [
        *token_sources(identity),
        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
    ]
    if assertion and identity.spec.delivery is TokenDelivery.SECRET:
        secret = {"name": token_secret_name(identity), "items": [{"key": "assertion", "path": "assertion"}], "optional": True}
        sources.append({"secret": secret})
    return {"name": VOLUME, "projected": {"defaultMode": 0o444, "sources": sources}}


def agent_pod_spec(spec: Mapping[str, Any], identity: AgentIdentity, *, assertion: bool) -> dict[str, Any]:
    """The pod spec to store: ``spec`` running as ``identity``. Idempotent (the webhook may be
    invoked again after other webhooks). Raises :class:`MountTaken`."""
    dropped = {volume["name"] for volume in spec.get("volumes") or [] if _replaced(volume)}
    mount = {"name": VOLUME, "mountPath": TOKEN_MOUNT, "readOnly": True}

    def container(body: Mapping[str, Any]) -> dict[str, Any]:
        mounts = [m for m in body.get("volumeMounts") or [] if m.get("name") not in dropped]
        taken = [m["name"] for m in mounts if str(m.get("mountPath", "")).rstrip("/") == TOKEN_MOUNT]
        if taken:
            raise MountTaken(
                f"container {body.get('name')!r} mounts volume {taken[0]!r} at {TOKEN_MOUNT}, where the agent's token goes"
            )
        return {**body, "volumeMounts": [*mounts, mount]}

    result = dict(spec)
    for field in ("initContainers", "containers", "ephemeralContainers"):
        if spec.get(field):
            result[field] = [container(body) for body in spec[field]]
    volumes = [volume for volume in spec.get("volumes") or [] if volume.get("name") not in dropped]
    result["volumes"] = [*volumes, agent_volume(identity, assertion=assertion)]
    result["serviceAccountName"] = child_name(identity)
    result["serviceAccount"] = child_name(identity)  # the deprecated alias must agree, or the API server refuses
    result["automountServiceAccountToken"] = False
    return result
