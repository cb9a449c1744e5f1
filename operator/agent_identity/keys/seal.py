"""The creator stamp's seal, pure: an HMAC the mutating webhook puts next to the creator it stamps.

The seal binds the creator to one object: its namespace, its name, its spec exactly as admitted,
the moment it was admitted and a random nonce, so no two admissions make the same seal. The
reconciler provisions only on a valid seal, so a creator annotation written by a client, copied
from another identity, or left on an object whose spec was edited afterwards is worth nothing.

A seal vouches for one object, once. Mutating admission cannot see the uid the API server assigns
later, so an object of the same name re-created with a copied stamp within :data:`MAX_SKEW` of the
admission would carry a valid seal too. The reconciler therefore claims each seal for the uid it
first provisions (a create-only ledger entry named :func:`ledger_name`, see
``engine.seal_ledger``) and then writes :func:`binding`, an HMAC over the seal and that uid, into
the status: a binding copied to another object does not hold for its uid. Once
:func:`window_closed`, no new object can carry the seal, so the entry may go unless a second
object carrying it still exists (:func:`may_forget`). The seal is made only after the admission review admitted the object,
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

VERSION = "v2"
LEGACY = "v1"  # no nonce: still checked, for identities sealed before v2
# The object is created right after the webhook sealed it; more than this apart is a replay.
MAX_SKEW = timedelta(minutes=2)
# How far the clocks of the operator's replicas and of the API server may disagree: a ledger entry
# is kept this long past the seal's window, which is judged by the API server's creationTimestamp.
CLOCK_MARGIN = timedelta(minutes=5)
LEDGER_PREFIX = "aid-seal-"
# Spec fields the seal does not cover: they may only end the identity (spec.done, one-way by the
# CRD's CEL rule), never widen or lengthen it, so setting one after admission breaks no seal.
UNSEALED_SPEC_FIELDS = frozenset({"done"})


def _message(
    *, version: str, namespace: str, name: str, spec: Mapping[str, Any], creator: str, sealed_at: int, nonce: str
) -> bytes:
    sealed = {key: value for key, value in spec.items() if key not in UNSEALED_SPEC_FIELDS}
    document = {"v": version, "namespace": namespace, "name": name, "spec": sealed, "creator": creator, "sealedAt": sealed_at}
    if version != LEGACY:
        document["nonce"] = nonce
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _mac(key: Key, message: bytes) -> str:
    digest = hmac.new(key.material.encode(), message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def seal(key: Key, *, namespace: str, name: str, spec: Mapping[str, Any], creator: str, now: datetime, nonce: str) -> str:
    """``v2.<kid>.<unix seconds>.<nonce>.<HMAC-SHA256>`` over the object's identity-defining parts
    and ``nonce`` (URL-safe base64, fresh for every admission)."""
    sealed_at = int(now.timestamp())
    message = _message(
        version=VERSION, namespace=namespace, name=name, spec=spec, creator=creator, sealed_at=sealed_at, nonce=nonce
    )
    return f"{VERSION}.{key.kid}.{sealed_at}.{nonce}.{_mac(key, message)}"


def _parts(value: str) -> tuple[str, str, int, str, str] | None:
    """(version, kid, sealed at, nonce, mac) of a well-formed seal."""
    parts = value.split(".")
    if parts[0] == LEGACY and len(parts) == 4:
        parts.insert(3, "")
    if len(parts) != 5 or parts[0] not in (VERSION, LEGACY) or not parts[2].isdigit():
        return None
    if parts[0] == VERSION and not parts[3]:
        return None
    version, kid, sealed_text, nonce, mac = parts
    return version, kid, int(sealed_text), nonce, mac


def seal_kid(value: str) -> str | None:
    parts = _parts(value)
    return parts[1] if parts else None


def sealed_at_of(value: str) -> datetime | None:
    """When a well-formed seal says it was made."""
    parts = _parts(value)
    return datetime.fromtimestamp(parts[2], UTC) if parts else None


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
    parts = _parts(value)
    if parts is None:
        return "the creator seal is malformed"
    version, kid, sealed_seconds, nonce, mac = parts
    key = ring.find(kid)
    if key is None:
        return f"the creator seal names an unknown key {kid!r}"
    message = _message(
        version=version, namespace=namespace, name=name, spec=spec, creator=creator, sealed_at=sealed_seconds, nonce=nonce
    )
    if not hmac.compare_digest(_mac(key, message), mac):
        return "the creator seal does not match this object (copied from another object, or the creator or spec was edited)"
    sealed_at = datetime.fromtimestamp(sealed_seconds, UTC)
    if abs(created_at - sealed_at) > MAX_SKEW:
        return f"the creator seal was made at {sealed_at.isoformat()}, not when this object was created (replayed)"
    return None


def ledger_name(value: str) -> str:
    """The name of the ledger entry (a Lease) that claims the seal ``value`` for one object."""
    return LEDGER_PREFIX + hashlib.sha256(value.encode()).hexdigest()[:40]


def window_closed(sealed_at: datetime, now: datetime) -> bool:
    """No object created from now on can carry a seal made at ``sealed_at`` (clock margin included)."""
    return now > sealed_at + MAX_SKEW + CLOCK_MARGIN


def binding(ring: KeyRing, value: str, uid: str) -> str | None:
    """The HMAC, under the seal's own key, that says the seal ``value`` was claimed for ``uid``."""
    parts = _parts(value)
    key = ring.find(parts[1]) if parts else None
    if key is None or not uid:
        return None
    message = json.dumps({"v": "binding", "seal": value, "uid": uid}, sort_keys=True, separators=(",", ":")).encode()
    return _mac(key, message)


def bound(ring: KeyRing, value: str, uid: str, claimed: str | None) -> bool:
    """``claimed`` is the binding of the seal ``value`` to ``uid``."""
    expected = binding(ring, value, uid)
    return expected is not None and claimed is not None and hmac.compare_digest(expected, claimed)


def already_vouched(namespace: str, name: str, uid: str) -> str:
    """Why an object carrying a seal claimed by the object ``uid`` is not vouched for."""
    return f"this seal already vouched for AgentIdentity {namespace}/{name} uid {uid} (a stamp copied onto a re-created object)"


def may_forget(
    *, entry: str, claimed_uid: str, sealed_at: datetime, now: datetime, current: tuple[str, str | None] | None
) -> bool:
    """Whether the ledger entry named ``entry``, claiming its seal for ``claimed_uid``, may go.
    ``current`` is (uid, seal) of the object of the seal's namespace and name as stored now (None:
    there is none). Only once the window has closed, and never while the object there carries the
    seal under another uid: that object would otherwise claim the seal afresh."""
    if not window_closed(sealed_at, now):
        return False
    if current is None:
        return True
    uid, value = current
    return not value or ledger_name(value) != entry or uid == claimed_uid


class Sealer(Protocol):
    """Seals and checks creator stamps (``keystore.SealKeys`` keeps the keys in a Secret)."""

    def seal(self, *, namespace: str, name: str, spec: Mapping[str, Any], creator: str) -> str: ...

    def problem(self, body: Mapping[str, Any], *, created_at: datetime) -> str | None: ...

    def creator_of(self, identity: AgentIdentity) -> Creator | None: ...
