"""One level-triggered reconcile of one AgentIdentity: observe, decide (pure), apply.

Run it any number of times, after a crash at any point, and it converges on the same children:
names are deterministic, creates that meet an existing object compare and converge instead of
duplicating, and deadlines come from persisted fields (creationTimestamp, the delegator's
expiresAt, the token Secret's annotations), never from memory.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from agent_identity.api.conditions import EXPIRED, READY, Reason, set_condition
from agent_identity.api.durations import (
    format_timestamp,
    next_look,
    parse_duration,
    parse_timestamp,
    token_expiration_seconds,
)
from agent_identity.api.v1alpha1 import FINAL_PHASES, RETIRED_PHASES, AgentIdentity, AgentProfile
from agent_identity.engine import failpoints
from agent_identity.keys.seal import Sealer
from agent_identity.kube.client import ChildKind, ClusterAccess, Kube, KubeError
from agent_identity.ops.audit import Action, audit_record, emit
from agent_identity.plan.children import (
    ANNOTATION_SEAL,
    IssuedToken,
    Provenance,
    child_name,
    role,
    role_binding,
    service_account,
    token_annotations,
    token_request,
    token_secret,
    token_secret_data,
    token_secret_name,
)
from agent_identity.plan.decisions import (
    ChildAction,
    DelegatorView,
    Deny,
    Provision,
    Retire,
    TokenVerdict,
    Wait,
    decide,
    decode_secret_data,
    diff_child,
    is_ours,
    merged_for_update,
    parse_identity,
    recorded_uid,
    token_facts,
    token_verdict,
)
from agent_identity.policy.facts import (
    IdentityLookup,
    PolicySettings,
    ProfileLookup,
    ancestors,
    chain_of,
    facts_for,
    judge,
    load_profile,
)
from agent_identity.policy.rules import PURE_CHECKS, Creator, Violation, effective_ttl, evaluate

log = logging.getLogger(__name__)

# Revocation order: the ServiceAccount first, because its deletion invalidates the token at once.
RETIRE_ORDER = (ChildKind.SERVICE_ACCOUNT, ChildKind.TOKEN_SECRET, ChildKind.ROLE_BINDING, ChildKind.ROLE)
CONFLICT_RETRY = timedelta(seconds=30)


@dataclass(frozen=True)
class Result:
    """When to look at this identity again (``None``: only when something changes)."""

    requeue_at: datetime | None = None
    # Look again as soon as a worker is free, behind any deadline that is due (unhurried clean-up).
    follow_up: bool = False


class SigningFailed(Exception):
    """The delegation assertion could not be signed (key store unreachable, key unreadable)."""


class ChildConflictError(Exception):
    def __init__(self, kind: ChildKind, name: str) -> None:
        super().__init__(f"{kind} {name} already exists and is not owned by this AgentIdentity")


@dataclass(frozen=True)
class Settings:
    retain_for: timedelta = timedelta(hours=1)
    cluster_server: str | None = None
    policy: PolicySettings = field(default_factory=PolicySettings)


Signer = Callable[[AgentIdentity, Provenance, datetime], str]


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
    ) -> None:
        self.signer = signer
        self.sealer = sealer  # None only in the unsafe no-webhooks mode: creators are then taken on trust
        self.kube = kube
        self.settings = settings
        self.clock = clock
        self.lookup_identity = lookup_identity or kube.get_identity
        self.lookup_profile = lookup_profile or kube.get_profile
        self._access: ClusterAccess | None = None

    @property
    def access(self) -> ClusterAccess:
        if self._access is None:
            self._access = self.kube.cluster_access(server_override=self.settings.cluster_server)
        return self._access

    # -- entry points -----------------------------------------------------------------------------

    def reconcile(self, body: dict[str, Any]) -> Result:
        now = self.clock()
        parsed = parse_identity(body)
        if isinstance(parsed, str):
            self._write_status(body, phase_status(body, "Denied", Reason.INVALID_SPEC, parsed, now=now))
            return Result()
        identity = parsed
        if identity.metadata.deletion_timestamp:
            self.revoke(identity)
            return Result()
        phase = identity.status.phase
        profile = load_profile(self.lookup_profile, identity.spec.profile or self.settings.policy.default_profile)
        if phase in FINAL_PHASES:
            return self._keep_final(identity, profile, now=now)

        delegator = None
        if identity.spec.delegator and identity.spec.delegator.kind == "AgentIdentity":
            above = ancestors(identity, self.lookup_identity)
            direct = above[0] if above and above[0].metadata.name == identity.spec.delegator.name else None
            delegator = DelegatorView(direct, chain=chain_of(identity, above) if direct else None)

        decision = decide(identity, delegator=delegator, now=now, profile=profile, ttl=self._ttl(identity, profile))
        if isinstance(decision, Provision):
            decision = self._judged(identity, decision, now=now)
        try:
            match decision:
                case Provision():
                    return self._provision(identity, decision, now=now)
                case Retire():
                    return self._retire(identity, decision, profile, now=now)
                case Deny(reason=reason, message=message):
                    self._delete_children(identity)
                    self._transition(identity, "Denied", reason, message, now=now, chain=(), expires_at=None)
                    return Result()
                case Wait(reason=reason, message=message, retry_after=retry_after):
                    self._write_status(body, phase_status(body, "Pending", reason, message, now=now))
                    return Result(requeue_at=now + retry_after)
        except ChildConflictError as conflict:
            self._transition(identity, "Failed", Reason.NAME_CONFLICT, str(conflict), now=now, chain=(), expires_at=None)
            return Result(requeue_at=now + CONFLICT_RETRY)
        except KubeError as error:
            self._report_api_error(identity, error, now=now)
            raise  # the work queue retries with backoff
        raise AssertionError(f"unhandled decision {decision!r}")

    def _ttl(self, identity: AgentIdentity, profile: AgentProfile | None) -> timedelta | None:
        """The effective TTL; for a live identity whose profile has gone, the one it was given."""
        ttl = effective_ttl(identity.spec, profile)
        if ttl is None and identity.status.expires_at and not identity.spec.delegator:
            created = parse_timestamp(identity.metadata.creation_timestamp)
            ttl = parse_timestamp(identity.status.expires_at) - created
        return ttl

    def _judged(self, identity: AgentIdentity, decision: Provision, *, now: datetime) -> Provision | Deny:
        """Defence in depth before anything is provisioned: the seal on every look (cheap: a forged
        status never skips it), and the webhook's whole policy chain on the first provisioning."""
        created_at = parse_timestamp(identity.metadata.creation_timestamp)
        problem = self.sealer.problem(identity.body, created_at=created_at) if self.sealer else None
        if problem is None and identity.status.phase == "Ready":
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
        if identity.status.phase != "Ready":
            body = identity.body
            try:
                self._write_status(body, phase_status(body, "Pending", Reason.API_ERROR, message, now=now))
            except KubeError as status_error:
                log.warning(
                    "could not report %s on %s/%s: %s",
                    Reason.API_ERROR,
                    identity.metadata.namespace,
                    identity.metadata.name,
                    status_error,
                )
        emit(
            audit_record(
                Action.FAILED,
                identity,
                now=now,
                chain=tuple(identity.status.delegation_chain or ()),
                expires_at=None,
                reason=Reason.API_ERROR,
                detail={"error": str(error)},
            )
        )
        self._event(identity, "Warning", Reason.API_ERROR, message, now=now)

    def revoke(self, identity: AgentIdentity) -> None:
        """The AgentIdentity is being deleted: remove its credentials now, not when the garbage
        collector gets to them."""
        deleted = self._delete_children(identity)
        if identity.status.phase in FINAL_PHASES and not deleted:
            return  # a retired record removed after its retention period: nothing was live
        now = self.clock()
        chain = tuple(identity.status.delegation_chain or ())
        expires_at = parse_timestamp(identity.status.expires_at) if identity.status.expires_at else None
        emit(audit_record(Action.REVOKED, identity, now=now, chain=chain, expires_at=expires_at, reason=Reason.DELETED))
        self._event(identity, "Normal", Reason.DELETED, "AgentIdentity deleted: credentials revoked", now=now)

    # -- decisions applied ------------------------------------------------------------------------

    def _provision(self, identity: AgentIdentity, decision: Provision, *, now: datetime) -> Result:
        provenance = decision.provenance
        if decision.delegator_owner_reference:
            self._ensure_delegator_owner(identity, decision.delegator_owner_reference)
        first_time = identity.status.phase is None  # never reconciled: children are most likely absent
        account, restored = self._ensure_child(
            identity, ChildKind.SERVICE_ACCOUNT, service_account(identity, provenance), expect_absent=first_time
        )
        failpoints.hit("after-serviceaccount")
        uids = {ChildKind.SERVICE_ACCOUNT: account["metadata"]["uid"]}
        for kind, desired in (
            (ChildKind.ROLE, role(identity, provenance)),
            (ChildKind.ROLE_BINDING, role_binding(identity, provenance)),
        ):
            child, changed = self._ensure_child(identity, kind, desired, expect_absent=first_time)
            uids[kind], restored = child["metadata"]["uid"], restored | changed
            failpoints.hit(f"after-{kind.lower()}")
        secret, _ = self._ensure_child(
            identity, ChildKind.TOKEN_SECRET, token_secret(identity, provenance), expect_absent=first_time
        )
        uids[ChildKind.TOKEN_SECRET] = secret["metadata"]["uid"]
        failpoints.hit("after-secret")
        issued = self._ensure_token(identity, secret, provenance, now=now)
        failpoints.hit("after-token")

        facts = token_facts(secret) if issued is None else None
        token_issued_at = issued.issued_at if issued else facts.issued_at if facts else now
        token_expires_at = issued.expires_at if issued else facts.expires_at if facts else provenance.expires_at
        was_ready = identity.status.phase == "Ready"
        message = f"credentials valid until {format_timestamp(provenance.expires_at)}"
        status = phase_status(
            identity.body,
            "Ready",
            Reason.PROVISIONED,
            message,
            now=now,
            ready=True,
            extra={
                "serviceAccountName": child_name(identity),
                "serviceAccountUID": account["metadata"]["uid"],
                "childUIDs": {str(kind): uid for kind, uid in uids.items()},
                "tokenSecretName": token_secret_name(identity),
                "issuedAt": format_timestamp(token_issued_at),
                "expiresAt": format_timestamp(provenance.expires_at),
                "tokenExpiresAt": format_timestamp(token_expires_at),
                "delegationChain": list(provenance.chain),
                **({"profile": provenance.profile, "riskLevel": provenance.risk_level} if provenance.profile else {}),
            },
        )
        self._write_status(identity.body, status)
        if not was_ready:
            self._record(
                identity,
                Action.PROVISIONED,
                Reason.PROVISIONED,
                provenance,
                now=now,
                message=(
                    f"ServiceAccount, Role, RoleBinding and token Secret {token_secret_name(identity)} ready; "
                    f"token expires {format_timestamp(token_expires_at)}, "
                    f"identity retires {format_timestamp(provenance.expires_at)}"
                ),
            )
        elif restored or issued:
            what = "token re-issued" if issued else "children restored"
            self._event(identity, "Normal", Reason.RESTORED, f"drift repaired: {what}", now=now)

        return Result(
            requeue_at=next_look(
                expires_at=provenance.expires_at, token_issued_at=token_issued_at, token_expires_at=token_expires_at
            )
        )

    def _retire(self, identity: AgentIdentity, decision: Retire, profile: AgentProfile | None, *, now: datetime) -> Result:
        if self._revoke_first(identity):
            # Credentials first, everything else after: when many identities fall due in the same
            # second, every ServiceAccount goes (killing its tokens) before any clean-up runs.
            return Result(follow_up=True)
        self._delete_children(identity)
        provenance = decision.provenance
        self._transition(
            identity,
            decision.phase,
            decision.reason,
            decision.message,
            now=now,
            chain=provenance.chain,
            expires_at=provenance.expires_at,
        )
        return Result(requeue_at=provenance.expires_at + self._retain_for(profile))

    def _retain_for(self, profile: AgentProfile | None) -> timedelta:
        """The profile's retainFor, else the operator's --retain-for."""
        if profile and profile.spec.retain_for:
            return parse_duration(profile.spec.retain_for)
        return self.settings.retain_for

    def _keep_final(self, identity: AgentIdentity, profile: AgentProfile | None, *, now: datetime) -> Result:
        """Expired, Revoked and Denied identities hold no credentials; retired records go after
        their retention period (like a Job's ttlSecondsAfterFinished)."""
        self._delete_children(identity)
        if identity.status.phase not in RETIRED_PHASES or identity.status.expires_at is None:
            return Result()
        remove_at = parse_timestamp(identity.status.expires_at) + self._retain_for(profile)
        if now < remove_at:
            return Result(requeue_at=remove_at)
        self.kube.delete_identity(identity.metadata.namespace, identity.metadata.name, uid=identity.metadata.uid)
        log.info("removed retired AgentIdentity %s/%s after retention", identity.metadata.namespace, identity.metadata.name)
        return Result()

    # -- children ---------------------------------------------------------------------------------

    def _ensure_child(
        self, identity: AgentIdentity, kind: ChildKind, desired: dict[str, Any], *, expect_absent: bool
    ) -> tuple[dict[str, Any], bool]:
        """Converges one child: the object as it now is, and whether an existing one had drifted.

        ``expect_absent`` (an identity never provisioned) creates without looking first: one
        request instead of two on the hot path; a 409 means an earlier run got that far, and we
        converge on what is there like any other time."""
        namespace, name = identity.metadata.namespace, desired["metadata"]["name"]
        if expect_absent:
            try:
                return self.kube.create_child(kind, desired), False
            except KubeError as error:
                if not error.conflict:
                    raise
        actual = self.kube.get_child(kind, namespace, name)
        action = diff_child(desired, actual, owner_uid=identity.metadata.uid, recorded_uid=recorded_uid(identity, kind))
        if action is ChildAction.KEEP:
            assert actual is not None
            return actual, False
        if action is ChildAction.CONFLICT:
            raise ChildConflictError(kind, name)
        if action is ChildAction.CREATE:
            try:
                return self.kube.create_child(kind, desired), False
            except KubeError as error:
                if not error.conflict:
                    raise
                # Created by an earlier run we did not see finish: converge on what is there.
                return self._ensure_child(identity, kind, desired, expect_absent=False)
        assert actual is not None
        if action is ChildAction.RECREATE:
            self.kube.delete_child(kind, namespace, name, uid=actual["metadata"]["uid"])
            current = self.kube.create_child(kind, desired)
        else:
            current = self.kube.replace_child(kind, merged_for_update(desired, actual))
        log.info("restored %s %s/%s (%s)", kind, namespace, name, action)
        return current, True

    def _ensure_token(
        self, identity: AgentIdentity, secret: dict[str, Any], provenance: Provenance, *, now: datetime
    ) -> IssuedToken | None:
        """Mints a token bound to ``secret`` unless it already holds a valid one; the new token or None."""
        data = decode_secret_data(secret)
        current, assertion = data.get("token"), data.get("assertion")
        facts = token_facts(secret)
        expected = None
        if current and facts:
            expected = token_secret_data(
                identity=identity,
                issued=IssuedToken(token=current, issued_at=facts.issued_at, expires_at=facts.expires_at),
                server=self.access.server,
                ca_cert=self.access.ca_cert,
                assertion=assertion,
            )
        verdict = token_verdict(secret, expected_data=expected, now=now, identity_expires_at=provenance.expires_at)
        if verdict is TokenVerdict.VALID and self.signer is not None and not assertion:
            verdict = TokenVerdict.MISSING  # signing was switched on after this token was minted
        if verdict is TokenVerdict.VALID:
            return None
        namespace = identity.metadata.namespace
        request = token_request(
            audiences=list(identity.spec.token.audiences or []) if identity.spec.token else [],
            expiration_seconds=token_expiration_seconds(now=now, expires_at=provenance.expires_at),
            secret_name=secret["metadata"]["name"],
            secret_uid=secret["metadata"]["uid"],
        )
        issued = self.kube.request_token(namespace, child_name(identity), request, now=now)
        failpoints.hit("after-token-request")
        self.kube.write_token(
            namespace,
            secret["metadata"]["name"],
            data=token_secret_data(
                identity=identity,
                issued=issued,
                server=self.access.server,
                ca_cert=self.access.ca_cert,
                assertion=self._sign(identity, provenance, now),
            ),
            annotations=token_annotations(issued),
        )
        emit(
            audit_record(
                Action.TOKEN_ISSUED,
                identity,
                now=now,
                chain=provenance.chain,
                expires_at=provenance.expires_at,
                reason=str(verdict),
                profile=provenance.profile,
                risk_level=provenance.risk_level,
                detail={"tokenExpiresAt": format_timestamp(issued.expires_at), "assertion": self.signer is not None},
            )
        )
        return issued

    def _sign(self, identity: AgentIdentity, provenance: Provenance, now: datetime) -> str | None:
        if self.signer is None:
            return None
        try:
            return self.signer(identity, provenance, now)
        except Exception as error:  # any signing failure is one kind of failure here
            raise SigningFailed(f"signing the delegation assertion failed: {type(error).__name__}") from error

    def _revoke_first(self, identity: AgentIdentity) -> bool:
        """Deletes the ServiceAccount, whose tokens die with it; True if it was still there."""
        name = child_name(identity)
        if identity.status.service_account_uid:  # one request: the uid precondition makes it exact
            return self.kube.delete_child(
                ChildKind.SERVICE_ACCOUNT, identity.metadata.namespace, name, uid=identity.status.service_account_uid
            )
        account = self.kube.get_child(ChildKind.SERVICE_ACCOUNT, identity.metadata.namespace, name)
        if account is None or not is_ours(account, identity.metadata.uid, None):
            return False
        return self.kube.delete_child(
            ChildKind.SERVICE_ACCOUNT, identity.metadata.namespace, name, uid=account["metadata"]["uid"]
        )

    def _delete_children(self, identity: AgentIdentity) -> int:
        """Deletes every child this identity owns, or whose uid its status recorded (ownerReferences
        and labels can be stripped; a uid cannot be forged onto another object); how many existed."""
        namespace = identity.metadata.namespace
        names = {kind: child_name(identity) for kind in RETIRE_ORDER} | {ChildKind.TOKEN_SECRET: token_secret_name(identity)}
        deleted = 0
        for kind in RETIRE_ORDER:
            actual = self.kube.get_child(kind, namespace, names[kind])
            if actual is not None and is_ours(actual, identity.metadata.uid, recorded_uid(identity, kind)):
                deleted += self.kube.delete_child(kind, namespace, names[kind], uid=actual["metadata"]["uid"])
        return deleted

    def _ensure_delegator_owner(self, identity: AgentIdentity, reference: dict[str, Any]) -> None:
        body = self.lookup_identity(identity.metadata.namespace, identity.metadata.name) or {}
        references = body.get("metadata", {}).get("ownerReferences") or []
        if any(ref.get("uid") == reference["uid"] for ref in references):
            return
        self.kube.patch_identity_metadata(
            identity.metadata.namespace, identity.metadata.name, {"ownerReferences": [*references, reference]}
        )

    # -- status, events, audit ----------------------------------------------------------------------

    def _transition(
        self,
        identity: AgentIdentity,
        phase: str,
        reason: Reason,
        message: str,
        *,
        now: datetime,
        chain: tuple[str, ...],
        expires_at: datetime | None,
    ) -> None:
        """Writes a terminal or failed phase; the Event and audit line only on the transition."""
        body = identity.body
        extra: dict[str, Any] = {}
        if expires_at is not None:
            extra["expiresAt"] = format_timestamp(expires_at)
        if chain:
            extra["delegationChain"] = list(chain)
        self._write_status(body, phase_status(body, phase, reason, message, now=now, extra=extra))
        if identity.status.phase == phase:
            return
        action = {"Expired": Action.EXPIRED, "Revoked": Action.REVOKED, "Denied": Action.DENIED}.get(phase, Action.FAILED)
        provenance = Provenance(delegator="", task=identity.spec.task, chain=chain, expires_at=expires_at or now)
        self._record(identity, action, reason, provenance, now=now, message=message, warning=phase != "Expired")

    def _record(
        self,
        identity: AgentIdentity,
        action: Action,
        reason: Reason,
        provenance: Provenance,
        *,
        now: datetime,
        message: str,
        warning: bool = False,
    ) -> None:
        emit(
            audit_record(
                action,
                identity,
                now=now,
                chain=provenance.chain,
                expires_at=provenance.expires_at,
                reason=reason,
                profile=provenance.profile,
                risk_level=provenance.risk_level,
            )
        )
        self._event(identity, "Warning" if warning else "Normal", reason, message, now=now)

    def _event(self, identity: AgentIdentity, event_type: str, reason: Reason, message: str, *, now: datetime) -> None:
        try:
            self.kube.record_event(involved=identity.body, event_type=event_type, reason=str(reason), message=message, now=now)
        except KubeError as error:  # an Event is worth a warning, never a failed reconcile
            log.warning(
                "could not record event %s for %s/%s: %s", reason, identity.metadata.namespace, identity.metadata.name, error
            )

    def _write_status(self, body: dict[str, Any], status: dict[str, Any]) -> None:
        current = body.get("status") or {}
        if all(current.get(key) == value for key, value in status.items()):
            return
        metadata = body["metadata"]
        self.kube.patch_identity_status(metadata["namespace"], metadata["name"], status)


def phase_status(
    body: dict[str, Any],
    phase: str,
    reason: Reason,
    message: str,
    *,
    now: datetime,
    ready: bool = False,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The status for ``phase``: Ready and Expired conditions, observedGeneration, and ``extra``."""
    generation = int(body.get("metadata", {}).get("generation", 1))
    conditions = (body.get("status") or {}).get("conditions")
    conditions = set_condition(
        conditions, type_=READY, status=ready, reason=reason, message=message, generation=generation, now=now
    )
    expired = phase == "Expired"
    conditions = set_condition(
        conditions,
        type_=EXPIRED,
        status=expired,
        reason=reason if expired else Reason.NOT_EXPIRED,
        message=message if expired else "within its TTL",
        generation=generation,
        now=now,
    )
    return {"phase": phase, "observedGeneration": generation, "conditions": conditions, **(extra or {})}
