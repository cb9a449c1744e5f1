"""One level-triggered reconcile of one AgentIdentity: observe, decide (pure), apply.

This module routes; each concern has its own: :mod:`provisioning` (children and Ready status),
:mod:`credentials` (the token), :mod:`lifecycle` (retirement, revocation, denial, retention) and
:mod:`records` (status, Events, audit lines). Failures are handled here, in one place: a name
conflict fails the identity and retries later, an API error is reported and retried by the queue.

Run it any number of times, after a crash at any point, and it converges on the same children:
names are deterministic, creates that meet an existing object compare and converge instead of
duplicating, and deadlines come from persisted fields (the sealed spec.ttl and creationTimestamp
of the identity and of each delegator above it, the token Secret's annotations), never from memory
and never from a status, which anyone allowed to patch it could rewrite.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from agent_identity.api.conditions import READY, Reason
from agent_identity.api.durations import parse_timestamp
from agent_identity.api.v1alpha1 import FINAL_PHASES, AgentIdentity, BindingKind, Phase
from agent_identity.engine.credentials import Credentials, Signer
from agent_identity.engine.lifecycle import Lifecycle
from agent_identity.engine.provisioning import ChildConflictError, Provisioner
from agent_identity.engine.records import Recorder, Result, phase_status
from agent_identity.engine.seal_ledger import SealLedger
from agent_identity.keys.seal import Sealer
from agent_identity.kube.client import ClusterAccess, Kube, KubeError
from agent_identity.ops.audit import Action, audit_record, emit
from agent_identity.plan.children import ANNOTATION_SEAL, child_name, lease_name
from agent_identity.plan.decisions import DelegatorView, Deny, Provision, Retire, Wait, decide, parse_identity
from agent_identity.plan.heartbeat import Heartbeat, heartbeat_lease, heartbeat_state
from agent_identity.plan.workload import task_end
from agent_identity.policy.facts import (
    IdentityLookup,
    PolicySettings,
    ProfileLookup,
    ancestors,
    chain_of,
    facts_for,
    judge,
    profile_of,
)
from agent_identity.policy.rules import PURE_CHECKS, Creator, Violation, evaluate

log = logging.getLogger(__name__)

CONFLICT_RETRY = timedelta(seconds=30)


@dataclass(frozen=True)
class Settings:
    retain_for: timedelta = timedelta(hours=1)
    cluster_server: str | None = None
    policy: PolicySettings = field(default_factory=PolicySettings)


class Reconciler:
    def __init__(
        self,
        kube: Kube,
        *,
        settings: Settings,
        clock: Callable[[], datetime],
        lookup_identity: IdentityLookup | None = None,
        lookup_profile: ProfileLookup | None = None,
        signer: Signer | None = None,
        sealer: Sealer | None = None,
        ledger: SealLedger | None = None,
    ) -> None:
        self.kube = kube
        self.settings = settings
        self.clock = clock
        self.sealer = sealer  # None only in the unsafe no-webhooks mode: creators are then taken on trust
        self.ledger = ledger  # with a sealer: each seal vouches for the first uid provisioned with it only
        self.lookup_identity = lookup_identity or kube.get_identity
        self.lookup_profile = lookup_profile or kube.get_profile
        self._access: ClusterAccess | None = None
        # Heartbeats count only from here on (see plan.heartbeat): the start, then each time the
        # API server was reached again after a read failed to reach it.
        self.reachable_since = clock()
        self._unreachable = False
        self.records = Recorder(kube)
        self.lifecycle = Lifecycle(kube, self.records, retain_for=settings.retain_for, clock=clock)
        credentials = Credentials(kube, access=self.access, signer=signer)
        self.provisioner = Provisioner(kube, self.records, credentials, lookup_identity=self.lookup_identity)

    def access(self) -> ClusterAccess:
        """The API server address and CA agents are given (read once, when first needed)."""
        if self._access is None:
            self._access = self.kube.cluster_access(server_override=self.settings.cluster_server)
        return self._access

    def reconcile(self, body: dict[str, Any]) -> Result:
        now = self.clock()
        identity = parse_identity(body)
        if isinstance(identity, str):
            self.records.write_status(body, phase_status(body, Phase.DENIED, Reason.INVALID_SPEC, identity, now=now))
            return Result()
        if identity.metadata.deletion_timestamp:
            self.revoke(identity)
            return Result()
        profile = profile_of(identity, self.settings.policy, self.lookup_profile)
        if identity.status.phase in FINAL_PHASES:
            return self.lifecycle.keep_final(identity, profile, now=now)
        try:
            task_ended = self._task_ended(identity)
            heartbeat = self._heartbeat(identity, now=now)
            decision = decide(
                identity,
                delegator=self._delegator(identity),
                now=now,
                profile=profile,
                task_ended=task_ended,
                heartbeat_lost=heartbeat.lost if heartbeat else None,
            )
            if isinstance(decision, Provision):
                decision = self._judged(identity, decision, now=now)
            match decision:
                case Provision():
                    result = self.provisioner.provision(identity, decision, now=now)
                    if heartbeat is None or heartbeat.deadline is None:
                        return result
                    due = min(filter(None, (result.requeue_at, heartbeat.deadline)))
                    return replace(result, requeue_at=due)
                case Retire():
                    return self.lifecycle.retire(identity, decision, profile, now=now)
                case Deny():
                    return self.lifecycle.deny(identity, decision, now=now)
                case Wait(reason=reason, message=message, retry_after=retry_after):
                    self.records.write_status(body, phase_status(body, Phase.PENDING, reason, message, now=now))
                    return Result(requeue_at=now + retry_after)
        except ChildConflictError as conflict:
            self.records.transition(
                identity, Phase.FAILED, Reason.NAME_CONFLICT, str(conflict), now=now, chain=(), expires_at=None
            )
            return Result(requeue_at=now + CONFLICT_RETRY)
        except KubeError as error:
            self._report_api_error(identity, error, now=now)
            raise  # the work queue retries with backoff
        raise AssertionError(f"unhandled decision {decision!r}")

    def _task_ended(self, identity: AgentIdentity) -> str | None:
        """Why the workload of spec.boundTo has ended (None: not bound, or still running). The
        first sighting of it is recorded (status.boundWorkloadUID), so that its deletion or a
        replacement of the same name later ends the task too."""
        binding = identity.spec.bound_to
        if binding is None or identity.status.phase in FINAL_PHASES:
            return None
        namespace = identity.metadata.namespace
        observed: list[dict[str, Any]]
        if binding.kind is BindingKind.AGENT_PODS:
            observed = self.kube.pods_of(namespace, service_account=child_name(identity))
        else:
            get = self.kube.get_job if binding.kind is BindingKind.JOB else self.kube.get_pod
            found = get(namespace, str(binding.name))
            observed = [found] if found else []
        end = task_end(identity, observed)
        if end.seen and end.seen != identity.status.bound_workload_uid:
            self.records.write_status(identity.body, {"boundWorkloadUID": end.seen})
        return end.ended

    def _heartbeat(self, identity: AgentIdentity, *, now: datetime) -> Heartbeat | None:
        """The heartbeat of an identity with spec.heartbeat (None: it has none). Before it is first
        Ready its Lease is created (renewed now); once Ready, the Lease is read and judged. A read
        that cannot reach the API server raises (the queue retries); the first read after one
        moves ``reachable_since`` to now, so the outage does not count against any agent."""
        if not identity.spec.heartbeat or identity.status.phase in FINAL_PHASES:
            return None
        namespace, name = identity.metadata.namespace, lease_name(identity)
        try:
            lease = self.kube.get_stored("Lease", namespace, name)
            if lease is None and identity.status.phase != Phase.READY:
                try:
                    lease = self.kube.create_stored(heartbeat_lease(identity, now=now))
                except KubeError as error:
                    if not error.conflict:
                        raise
                    lease = self.kube.get_stored("Lease", namespace, name)
        except KubeError as error:
            if error.unreachable or error.status >= 500:
                self._unreachable = True
            raise
        if self._unreachable:
            self._unreachable, self.reachable_since = False, now
        return heartbeat_state(identity, lease, now=now, reachable_since=self.reachable_since)

    def reachable_again(self) -> None:
        """A watch resumed after a gap (the API server answers again): no heartbeat deadline falls
        within a period from now."""
        self.reachable_since = max(self.reachable_since, self.clock())

    def revoke(self, identity: AgentIdentity) -> None:
        """The AgentIdentity is being deleted: its credentials go now."""
        self.lifecycle.revoke(identity)

    def _delegator(self, identity: AgentIdentity) -> DelegatorView | None:
        """The delegating AgentIdentity and the chain above it with their profiles, walked through
        specs (its deadline is worked out from them)."""
        if not identity.spec.delegator or identity.spec.delegator.kind != "AgentIdentity":
            return None
        above = ancestors(identity, self.lookup_identity)
        direct = above[0] if above and above[0].metadata.name == identity.spec.delegator.name else None
        if direct is None:
            return DelegatorView(None)
        profiles = tuple(profile_of(agent, self.settings.policy, self.lookup_profile) for agent in above)
        return DelegatorView(direct, chain=chain_of(identity, above), lineage=above, profiles=profiles)

    def _judged(self, identity: AgentIdentity, decision: Provision, *, now: datetime) -> Provision | Deny:
        """Defence in depth before anything is provisioned: the seal on every look (cheap: a forged
        status never skips it), claimed for this uid alone (the ledger: one create the first time,
        then the status's binding, an HMAC), and the webhook's whole policy chain on the first
        provisioning."""
        created_at = parse_timestamp(identity.metadata.creation_timestamp)
        problem = self.sealer.problem(identity.body, created_at=created_at) if self.sealer else None
        if problem is None and self.ledger is not None:
            problem = self.ledger.claim(identity)
            decision = replace(decision, seal_binding=None if problem else self.ledger.binding(identity))
        if problem is None and identity.status.phase == Phase.READY:
            return decision
        facts = facts_for(
            identity,
            settings=self.settings.policy,
            lookup=self.lookup_identity,
            profile_lookup=self.lookup_profile,
            creator=None if problem else Creator.from_identity(identity),
            creator_of=self.sealer.creator_of if self.sealer else Creator.from_identity,
            created_at=created_at,
            admission=False,
        )
        if problem:
            # Nobody vouches for the creator: refuse, and say what else is wrong with the spec.
            unsealed = Violation("creator-sealed", f"metadata.annotations[{ANNOTATION_SEAL}]: {problem}")
            violations = [unsealed, *evaluate(replace(facts, require_creator=False), PURE_CHECKS)]
        else:
            violations = judge(self.kube, facts)
        return Deny(Reason.POLICY_VIOLATION, "; ".join(str(v) for v in violations)) if violations else decision

    def _report_api_error(self, identity: AgentIdentity, error: KubeError, *, now: datetime) -> None:
        """Says why in the Ready condition, with an Event and an audit line when the failure is new.
        A Ready identity keeps its phase: its credentials still work while we retry."""
        previous = next((c for c in identity.status.conditions or [] if c.type == READY), None)
        if previous is not None and previous.reason == Reason.API_ERROR:
            return
        message = f"{error}; retrying"
        if identity.status.phase != Phase.READY:
            body = identity.body
            try:
                self.records.write_status(body, phase_status(body, Phase.PENDING, Reason.API_ERROR, message, now=now))
            except KubeError as status_error:
                log.warning(
                    "could not report %s on %s/%s: %s",
                    Reason.API_ERROR,
                    identity.metadata.namespace,
                    identity.metadata.name,
                    status_error,
                )
        chain = tuple(identity.status.delegation_chain or ())
        emit(
            audit_record(
                Action.FAILED,
                identity,
                now=now,
                chain=chain,
                expires_at=None,
                reason=Reason.API_ERROR,
                detail={"error": str(error)},
            )
        )
        self.records.event(identity, "Warning", Reason.API_ERROR, message, now=now)
