"""The creator stamp's seal, pure: an HMAC the mutating webhook puts next to the creator it stamps.

The seal binds the creator to one object: its namespace, its name, its spec exactly as admitted and
the moment it was admitted. The reconciler provisions only on a valid seal, so a creator annotation
written by a client, copied from another identity, or left on an object whose spec was edited
afterwards is worth nothing. The seal is made only after the admission review admitted the object,
so a valid seal also says "the policy chain, SubjectAccessReviews included, passed for this spec".

The keys live in a Secret of the operator's namespace and rotate like the signing keys (see
:mod:`keyring`): a key seals once it has been published long enough for every replica to know it,
and stays until nothing it sealed can still be live.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from agent_identity.api.v1alpha1 import AgentIdentity
from agent_identity.keys.keyring import Key, KeyRing
from agent_identity.policy.rules import Creator

VERSION = "v1"
# The object is created right after the webhook sealed it; more than this apart is a replay.
MAX_SKEW = timedelta(minutes=2)


def _message(*, namespace: str, name: str, spec: Mapping[str, Any], creator: str, sealed_at: int) -> bytes:
    document = {"v": VERSION, "namespace": namespace, "name": name, "spec": spec, "creator": creator, "sealedAt": sealed_at}
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _mac(key: Key, message: bytes) -> str:
    digest = hmac.new(key.material.encode(), message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def seal(key: Key, *, namespace: str, name: str, spec: Mapping[str, Any], creator: str, now: datetime) -> str:
    """``v1.<kid>.<unix seconds>.<HMAC-SHA256>`` over the object's identity-defining parts."""
    sealed_at = int(now.timestamp())
    message = _message(namespace=namespace, name=name, spec=spec, creator=creator, sealed_at=sealed_at)
    return f"{VERSION}.{key.kid}.{sealed_at}.{_mac(key, message)}"


def seal_kid(value: str) -> str | None:
    parts = value.split(".")
    return parts[1] if len(parts) == 4 and parts[0] == VERSION else None


def check(
    ring: KeyRing,
    value: str | None,
    *,
    namespace: str,
    name: str,
    spec: Mapping[str, Any],
    creator: str | None,
    created_at: datetime,
) -> str | None:
    """Why the seal ``value`` does not vouch for this object, or None when it does."""
    if not value or not creator:
        return "no sealed creator stamp (the admission webhook did not admit this object)"
    parts = value.split(".")
    if len(parts) != 4 or parts[0] != VERSION or not parts[2].isdigit():
        return "the creator seal is malformed"
    _, kid, sealed_text, mac = parts
    key = ring.find(kid)
    if key is None:
        return f"the creator seal names an unknown key {kid!r}"
    message = _message(namespace=namespace, name=name, spec=spec, creator=creator, sealed_at=int(sealed_text))
    if not hmac.compare_digest(_mac(key, message), mac):
        return "the creator seal does not match this object (copied from another object, or the creator or spec was edited)"
    sealed_at = datetime.fromtimestamp(int(sealed_text), UTC)
    if abs(created_at - sealed_at) > MAX_SKEW:
        return f"the creator seal was made at {sealed_at.isoformat()}, not when this object was created (replayed)"
    return None


class Sealer(Protocol):
    """Seals and checks creator stamps (``keystore.SealKeys`` keeps the keys in a Secret)."""

    def seal(self, *, namespace: str, name: str, spec: Mapping[str, Any], creator: str) -> str: ...

    def problem(self, body: Mapping[str, Any], *, created_at: datetime) -> str | None: ...

    def creator_of(self, identity: AgentIdentity) -> Creator | None: ...
