"""Provisioning: the children an identity becomes, converged on their desired form, then its
credential, then a Ready status.

Each reconcile reads like a diff: observe the children, plan (a value from
:func:`agent_identity.plan.drift.plan_children`: keep, create, update, recreate or conflict per
child), apply the plan in a thin loop. A never-provisioned identity skips the observation and
creates straight away (one request per child on the hot path); a 409 means an earlier run got that
far, and that child is observed and planned again like any other time.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from agent_identity.api.conditions import Reason
from agent_identity.api.durations import format_timestamp, next_look
from agent_identity.api.v1alpha1 import AgentIdentity, Phase, TokenDelivery
from agent_identity.engine import failpoints
from agent_identity.engine.credentials import Credentials
from agent_identity.engine.records import Recorder, Result, phase_status
from agent_identity.kube.client import Kube, KubeError
from agent_identity.ops.audit import Action
from agent_identity.plan.children import (
    ChildKind,
    IssuedToken,
    Provenance,
    child_name,
    role,
    role_binding,
    service_account,
    token_secret,
    token_secret_name,
)
from agent_identity.plan.decisions import Provision
from agent_identity.plan.drift import (
    ChildAction,
    ChildStep,
    TokenFacts,
    merged_for_update,
    plan_child,
    plan_children,
    token_facts,
)
from agent_identity.policy.facts import IdentityLookup

log = logging.getLogger(__name__)


class ChildConflictError(Exception):
    def __init__(self, kind: ChildKind, name: str) -> None:
        super().__init__(f"{kind} {name} already exists and is not owned by this AgentIdentity")


@dataclass(frozen=True)
class Converged:
    children: dict[ChildKind, dict[str, Any]]  # every child as it now is
    repaired: bool  # an existing child had drifted and was put back


def desired_children(identity: AgentIdentity, provenance: Provenance) -> dict[ChildKind, dict[str, Any]]:
    """In the order they are made: the ServiceAccount first, the Secret its token is bound to last
    (none when the kubelet projects the tokens)."""
    children = {
        ChildKind.SERVICE_ACCOUNT: service_account(identity, provenance),
        ChildKind.ROLE: role(identity, provenance),
        ChildKind.ROLE_BINDING: role_binding(identity, provenance),
    }
    if identity.spec.delivery is TokenDelivery.SECRET:
        children[ChildKind.TOKEN_SECRET] = token_secret(identity, provenance)
    return children


class Provisioner:
    def __init__(self, kube: Kube, recorder: Recorder, credentials: Credentials, *, lookup_identity: IdentityLookup) -> None:
        self.kube, self.recorder, self.credentials, self.lookup_identity = kube, recorder, credentials, lookup_identity

    def provision(self, identity: AgentIdentity, decision: Provision, *, now: datetime) -> Result:
        provenance = decision.provenance
        if decision.delegator_owner_reference:
            self._ensure_delegator_owner(identity, decision.delegator_owner_reference)
        converged = self.converge(identity, desired_children(identity, provenance))
        secret = converged.children.get(ChildKind.TOKEN_SECRET)
        issued = None if secret is None else self.credentials.ensure_token(identity, secret, provenance, now=now)
        failpoints.hit("after-token")
        token = None if secret is None else issued or _held_token(secret, provenance, now=now)
        was_ready = identity.status.phase == Phase.READY
        self.recorder.write_status(
            identity.body, _ready_status(identity, converged, provenance, token, now=now, seal_binding=decision.seal_binding)
        )
        if not was_ready:
            self.recorder.record(
                identity,
                Action.PROVISIONED,
                Reason.PROVISIONED,
                provenance,
                now=now,
                message=_provisioned(identity, provenance, token),
                # Projected: the Ready condition and the audit line say it, and no Event makes it 4 writes.
                event=token is not None,
            )
        elif converged.repaired or issued:
            what = "token re-issued" if issued else "children restored"
            self.recorder.event(identity, "Normal", Reason.RESTORED, f"drift repaired: {what}", now=now)
        if token is None:
            return Result(requeue_at=provenance.expires_at)
        return Result(
            requeue_at=next_look(
                expires_at=provenance.expires_at, token_issued_at=token.issued_at, token_expires_at=token.expires_at
            )
        )

    def converge(self, identity: AgentIdentity, desired: dict[ChildKind, dict[str, Any]]) -> Converged:
        """Observe, plan, apply. Conflicts are found before anything is written."""
        first_time = identity.status.phase is None  # never reconciled: the children are most likely absent
        observed = {} if first_time else {kind: self._get(identity, body) for kind, body in desired.items()}
        plan = plan_children(identity, desired, observed)
        if plan.conflicts:
            step = plan.conflicts[0]
            raise ChildConflictError(step.kind, step.desired["metadata"]["name"])
        children: dict[ChildKind, dict[str, Any]] = {}
        repaired = False
        for step in plan.steps:
            children[step.kind], changed = self._apply(identity, step)
            repaired |= changed
            failpoints.hit(f"after-{step.kind.lower()}")
        return Converged(children, repaired)

    def _get(self, identity: AgentIdentity, desired: dict[str, Any]) -> dict[str, Any] | None:
        return self.kube.get_child(ChildKind(desired["kind"]), identity.metadata.namespace, desired["metadata"]["name"])

    def _apply(self, identity: AgentIdentity, step: ChildStep) -> tuple[dict[str, Any], bool]:
        """One step of the plan: the child as it now is, and whether an existing one had drifted."""
        namespace, name = identity.metadata.namespace, step.desired["metadata"]["name"]
        match step.action:
            case ChildAction.KEEP:
                assert step.actual is not None
                return step.actual, False
            case ChildAction.CONFLICT:
                raise ChildConflictError(step.kind, name)
            case ChildAction.CREATE:
                try:
                    return self.kube.create_child(step.kind, step.desired), False
                except KubeError as error:
                    if not error.conflict:
                        raise
                # Created by an earlier run we did not see finish: observe it and plan again.
                actual = self._get(identity, step.desired)
                return self._apply(identity, plan_child(identity, step.kind, step.desired, actual))
            case ChildAction.RECREATE:
                assert step.actual is not None
                self.kube.delete_child(step.kind, namespace, name, uid=step.actual["metadata"]["uid"])
                current = self.kube.create_child(step.kind, step.desired)
            case ChildAction.UPDATE:
                assert step.actual is not None
                current = self.kube.replace_child(step.kind, merged_for_update(step.desired, step.actual))
        log.info("restored %s %s/%s (%s)", step.kind, namespace, name, step.action)
        return current, True

    def _ensure_delegator_owner(self, identity: AgentIdentity, reference: dict[str, Any]) -> None:
        body = self.lookup_identity(identity.metadata.namespace, identity.metadata.name) or {}
        references = body.get("metadata", {}).get("ownerReferences") or []
        if any(ref.get("uid") == reference["uid"] for ref in references):
            return
        self.kube.patch_identity_metadata(
            identity.metadata.namespace, identity.metadata.name, {"ownerReferences": [*references, reference]}
        )


def _held_token(secret: dict[str, Any], provenance: Provenance, *, now: datetime) -> TokenFacts:
    """The lifetime of the valid token the Secret already holds."""
    # None cannot happen after ensure_token; never fail a Ready status over it
    return token_facts(secret) or TokenFacts(issued_at=now, expires_at=provenance.expires_at)


def _provisioned(identity: AgentIdentity, provenance: Provenance, token: IssuedToken | TokenFacts | None) -> str:
    retires = f"identity retires {format_timestamp(provenance.expires_at)}"
    if token is None:
        return f"ServiceAccount, Role and RoleBinding ready, tokens projected into its pods by the kubelet; {retires}"
    return (
        f"ServiceAccount, Role, RoleBinding and token Secret {token_secret_name(identity)} ready; "
        f"token expires {format_timestamp(token.expires_at)}, {retires}"
    )


def _ready_status(
    identity: AgentIdentity,
    converged: Converged,
    provenance: Provenance,
    token: IssuedToken | TokenFacts | None,
    *,
    now: datetime,
    seal_binding: str | None,
) -> dict[str, Any]:
    children = converged.children
    held = (
        {
            "tokenSecretName": token_secret_name(identity),
            "issuedAt": format_timestamp(token.issued_at),
            "tokenExpiresAt": format_timestamp(token.expires_at),
        }
        if token
        else {}
    )
    return phase_status(
        identity.body,
        Phase.READY,
        Reason.PROVISIONED,
        f"credentials valid until {format_timestamp(provenance.expires_at)}",
        now=now,
        ready=True,
        extra={
            "serviceAccountName": child_name(identity),
            "serviceAccountUID": children[ChildKind.SERVICE_ACCOUNT]["metadata"]["uid"],
            "childUIDs": {str(kind): child["metadata"]["uid"] for kind, child in children.items()},
            "expiresAt": format_timestamp(provenance.expires_at),
            **held,
            "delegationChain": list(provenance.chain),
            **({"profile": provenance.profile, "riskLevel": provenance.risk_level} if provenance.profile else {}),
            **({"sealBinding": seal_binding} if seal_binding else {}),
        },
    )
