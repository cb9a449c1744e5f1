"""The agent's credential: a short-lived, audience-bound token minted by TokenRequest for the
agent's ServiceAccount, bound to its token Secret (so deleting the Secret kills the token too),
and kept there with a kubeconfig and, when signing is on, the signed delegation assertion.

A token is minted only when the Secret holds none, holds one someone altered, or holds one the
API server capped short that is 80 % used: a reconcile of a healthy identity mints nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from agent_identity.api.durations import format_timestamp, token_expiration_seconds
from agent_identity.api.v1alpha1 import AgentIdentity
from agent_identity.engine import failpoints
from agent_identity.kube.client import ClusterAccess, Kube
from agent_identity.ops.audit import Action, audit_record, emit
from agent_identity.plan.children import (
    IssuedToken,
    Provenance,
    child_name,
    token_annotations,
    token_request,
    token_secret_data,
)
from agent_identity.plan.drift import TokenVerdict, decode_secret_data, token_facts, token_verdict

Signer = Callable[[AgentIdentity, Provenance, datetime], str]


class SigningFailed(Exception):
    """The delegation assertion could not be signed (key store unreachable, key unreadable)."""


class Credentials:
    def __init__(self, kube: Kube, *, access: Callable[[], ClusterAccess], signer: Signer | None) -> None:
        self.kube, self.access, self.signer = kube, access, signer

    def ensure_token(
        self, identity: AgentIdentity, secret: dict[str, Any], provenance: Provenance, *, now: datetime
    ) -> IssuedToken | None:
        """Mints a token bound to ``secret`` unless it already holds a valid one; the new token or None."""
        verdict = self._verdict(identity, secret, provenance, now=now)
        if verdict is TokenVerdict.VALID:
            return None
        namespace = identity.metadata.namespace
        metadata = secret["metadata"]
        request = token_request(
            audiences=identity.spec.audiences,
            expiration_seconds=token_expiration_seconds(now=now, expires_at=provenance.expires_at),
            secret_name=metadata["name"],
            secret_uid=metadata["uid"],
        )
        issued = self.kube.request_token(namespace, child_name(identity), request, now=now)
        failpoints.hit("after-token-request")
        access = self.access()
        self.kube.write_token(
            namespace,
            metadata["name"],
            data=token_secret_data(
                identity=identity,
                issued=issued,
                server=access.server,
                ca_cert=access.ca_cert,
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

    def _verdict(self, identity: AgentIdentity, secret: dict[str, Any], provenance: Provenance, *, now: datetime) -> TokenVerdict:
        data = decode_secret_data(secret)
        current, assertion = data.get("token"), data.get("assertion")
        facts = token_facts(secret)
        expected = None
        if current and facts:
            access = self.access()
            expected = token_secret_data(
                identity=identity,
                issued=IssuedToken(token=current, issued_at=facts.issued_at, expires_at=facts.expires_at),
                server=access.server,
                ca_cert=access.ca_cert,
                assertion=assertion,
            )
        verdict = token_verdict(secret, expected_data=expected, now=now, identity_expires_at=provenance.expires_at)
        if verdict is TokenVerdict.VALID and self.signer is not None and not assertion:
            return TokenVerdict.MISSING  # signing was switched on after this token was minted
        return verdict

    def _sign(self, identity: AgentIdentity, provenance: Provenance, now: datetime) -> str | None:
        if self.signer is None:
            return None
        try:
            return self.signer(identity, provenance, now)
        except Exception as error:  # any signing failure is one kind of failure here
            raise SigningFailed(f"signing the delegation assertion failed: {type(error).__name__}") from error
