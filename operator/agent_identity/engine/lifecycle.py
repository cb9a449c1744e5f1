"""The end of an identity's life, and what comes after: retirement at its deadline (or when its
delegator goes), revocation when it is deleted, denial, and the retired record's removal after
its retention period. Credentials go first, always: the ServiceAccount, whose deletion kills
every token it ever had, before anything else.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from agent_identity.api.conditions import Reason
from agent_identity.api.durations import parse_duration, parse_timestamp
from agent_identity.api.v1alpha1 import FINAL_PHASES, RETIRED_PHASES, AgentIdentity, AgentProfile, Phase
from agent_identity.engine.records import Recorder, Result
from agent_identity.kube.client import Kube
from agent_identity.ops.audit import Action, audit_record, emit
from agent_identity.plan.children import ChildKind, child_name, token_secret_name
from agent_identity.plan.decisions import Deny, Retire
from agent_identity.plan.drift import is_ours, recorded_uid

log = logging.getLogger(__name__)

# Revocation order: the ServiceAccount first, because its deletion invalidates the token at once.
RETIRE_ORDER = (ChildKind.SERVICE_ACCOUNT, ChildKind.TOKEN_SECRET, ChildKind.ROLE_BINDING, ChildKind.ROLE)
# An agent's pods get a second to stop: their credentials are already dead, nothing is left to finish.
POD_GRACE_SECONDS = 1


class Lifecycle:
    def __init__(self, kube: Kube, recorder: Recorder, *, retain_for: timedelta, clock: Callable[[], datetime]) -> None:
        self.kube, self.recorder, self.retain_for, self.clock = kube, recorder, retain_for, clock

    def retire(self, identity: AgentIdentity, decision: Retire, profile: AgentProfile | None, *, now: datetime) -> Result:
        if self._revoke_first(identity):
            # Credentials first, everything else after: when many identities fall due in the same
            # second, every ServiceAccount goes (killing its tokens) before any clean-up runs.
            return Result(follow_up=True)
        self.delete_children(identity)
        provenance = decision.provenance
        self.recorder.transition(
            identity,
            decision.phase,
            decision.reason,
            decision.message,
            now=now,
            chain=provenance.chain,
            expires_at=provenance.expires_at,
        )
        return Result(requeue_at=provenance.expires_at + self._retention(profile))

    def deny(self, identity: AgentIdentity, decision: Deny, *, now: datetime) -> Result:
        self.delete_children(identity)
        self.recorder.transition(identity, Phase.DENIED, decision.reason, decision.message, now=now, chain=(), expires_at=None)
        return Result()

    def keep_final(self, identity: AgentIdentity, profile: AgentProfile | None, *, now: datetime) -> Result:
        """Expired, Revoked and Denied identities hold no credentials; retired records go after
        their retention period (like a Job's ttlSecondsAfterFinished)."""
        self.delete_children(identity)
        if identity.status.phase not in RETIRED_PHASES or identity.status.expires_at is None:
            return Result()
        remove_at = parse_timestamp(identity.status.expires_at) + self._retention(profile)
        if now < remove_at:
            return Result(requeue_at=remove_at)
        self.kube.delete_identity(identity.metadata.namespace, identity.metadata.name, uid=identity.metadata.uid)
        log.info("removed retired AgentIdentity %s/%s after retention", identity.metadata.namespace, identity.metadata.name)
        return Result()

    def revoke(self, identity: AgentIdentity) -> None:
        """The AgentIdentity is being deleted: remove its credentials now, not when the garbage
        collector gets to them."""
        deleted = self.delete_children(identity)
        if identity.status.phase in FINAL_PHASES and not deleted:
            return  # a retired record removed after its retention period: nothing was live
        now = self.clock()
        chain = tuple(identity.status.delegation_chain or ())
        expires_at = parse_timestamp(identity.status.expires_at) if identity.status.expires_at else None
        ended = {"endedAt": identity.metadata.deletion_timestamp} if identity.metadata.deletion_timestamp else None
        emit(
            audit_record(
                Action.REVOKED, identity, now=now, chain=chain, expires_at=expires_at, reason=Reason.DELETED, detail=ended
            )
        )
        self.recorder.event(identity, "Normal", Reason.DELETED, "AgentIdentity deleted: credentials revoked", now=now)

    def delete_children(self, identity: AgentIdentity) -> int:
        """Deletes every child this identity owns, or whose uid its status recorded (ownerReferences
        and labels can be stripped; a uid cannot be forged onto another object), then the pods
        running as it; how many children existed."""
        namespace = identity.metadata.namespace
        names = {kind: child_name(identity) for kind in RETIRE_ORDER} | {ChildKind.TOKEN_SECRET: token_secret_name(identity)}
        deleted = 0
        for kind in RETIRE_ORDER:
            actual = self.kube.get_child(kind, namespace, names[kind])
            if actual is not None and is_ours(actual, identity.metadata.uid, recorded_uid(identity, kind)):
                deleted += self.kube.delete_child(kind, namespace, names[kind], uid=actual["metadata"]["uid"])
        if deleted or identity.status.phase not in FINAL_PHASES:
            # A pod must not outlive its identity (its tokens already died with the ServiceAccount).
            # Only pods the webhook let through run as aid-<name>: the pod guard refuses the rest.
            self.kube.delete_pods(namespace, service_account=child_name(identity), grace_seconds=POD_GRACE_SECONDS)
        return deleted

    def _revoke_first(self, identity: AgentIdentity) -> bool:
        """Deletes the ServiceAccount, whose tokens die with it; True if it was still there."""
        namespace, name = identity.metadata.namespace, child_name(identity)
        uid = identity.status.service_account_uid
        if uid is None:  # never recorded: look, and delete only what is ours
            account = self.kube.get_child(ChildKind.SERVICE_ACCOUNT, namespace, name)
            if account is None or not is_ours(account, identity.metadata.uid, None):
                return False
            uid = account["metadata"]["uid"]
        # With the uid recorded, one request: the uid precondition makes it exact.
        return self.kube.delete_child(ChildKind.SERVICE_ACCOUNT, namespace, name, uid=uid)

    def _retention(self, profile: AgentProfile | None) -> timedelta:
        """The profile's retainFor, else the operator's --retain-for."""
        if profile and profile.spec.retain_for:
            return parse_duration(profile.spec.retain_for)
        return self.retain_for
