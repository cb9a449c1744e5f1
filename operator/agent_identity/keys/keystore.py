"""Key rings at home: each in a Secret of the operator's namespace, so rotation survives restarts
and is shared by replicas. The signing keys are also mirrored as a public JWKS into a ConfigMap for
in-cluster verifiers, and served over HTTP at ``/.well-known/jwks.json`` with an OpenID discovery
document; the seal keys (HMAC, see :mod:`seal`) never leave their Secret.
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from agent_identity.api.durations import parse_timestamp
from agent_identity.api.v1alpha1 import AgentIdentity
from agent_identity.keys.keyring import Key, KeyRing, random_material
from agent_identity.keys.keyring import rotate as rotate_ring
from agent_identity.keys.seal import binding as seal_binding
from agent_identity.keys.seal import bound as seal_bound
from agent_identity.keys.seal import check as check_seal
from agent_identity.keys.seal import seal as make_seal
from agent_identity.keys.seal import seal_kid
from agent_identity.keys.signing import PEM_FIELD, KeySet, SigningKey, assertion_claims, new_private_pem, sign
from agent_identity.kube.client import Kube, KubeError
from agent_identity.plan.children import ANNOTATION_CREATOR, ANNOTATION_SEAL, Provenance
from agent_identity.policy.rules import Creator

log = logging.getLogger(__name__)

SECRET_NAME = "agent-identity-signing-keys"
SEAL_SECRET_NAME = "agent-identity-seal-keys"
CONFIGMAP_NAME = "agent-identity-jwks"
KEYS_FIELD = "keys.json"


class StoredKeyRing:
    """A key ring kept in one Secret of the operator's namespace: loaded, rotated on schedule and
    written back; when two replicas rotate at once, the one that loses the write re-reads.
    A subclass names its Secret, the JSON field of the key material and how to make a key."""

    secret_name: str
    material_field: str

    def __init__(
        self, kube: Kube, *, namespace: str, period: timedelta, publish_ahead: timedelta, clock: Callable[[], datetime]
    ) -> None:
        self.kube, self.namespace = kube, namespace
        self.period, self.publish_ahead, self.clock = period, publish_ahead, clock
        self._lock = threading.Lock()
        self._ring: KeyRing | None = None

    @staticmethod
    def new_material() -> str:
        raise NotImplementedError

    def _rotate(self, ring: KeyRing | None, now: datetime) -> KeyRing:
        return rotate_ring(ring, now=now, period=self.period, publish_ahead=self.publish_ahead, new_material=self.new_material)

    def current(self) -> KeyRing:
        with self._lock:
            ring = self._ring
        if ring is None or self.clock() - ring.keys[-1].created_at >= self.period:
            ring = self.sync()
        return ring

    def active(self) -> Key:
        return self.current().active(now=self.clock(), publish_ahead=self.publish_ahead)

    def sync(self) -> KeyRing:
        """Load, rotate if due, and write back; on a write conflict another replica won: re-read."""
        ring: KeyRing | None = None
        for _ in range(5):
            secret = self.kube.get_stored("Secret", self.namespace, self.secret_name)
            stored = self._decode(secret) if secret else None
            ring = self._rotate(stored, self.clock())
            if ring == stored:
                break
            encoded = base64.b64encode(ring.to_json(material_field=self.material_field).encode()).decode()
            try:
                self.kube.store(stored_body(self.namespace, "Secret", self.secret_name, secret, data={KEYS_FIELD: encoded}))
            except KubeError as error:
                if error.conflict:
                    continue
                raise
            log.info("%s rotated: %s", self.secret_name, ", ".join(key.kid for key in ring.keys))
            break
        assert ring is not None
        self.synced(ring)
        with self._lock:
            self._ring = ring
        return ring

    def _decode(self, secret: dict[str, Any]) -> KeyRing:
        return KeyRing.from_json(base64.b64decode(secret["data"][KEYS_FIELD]).decode(), material_field=self.material_field)

    def synced(self, ring: KeyRing) -> None:
        """Called with every ring loaded or rotated (a subclass publishes it)."""


def stored_body(namespace: str, kind: str, name: str, current: dict[str, Any] | None, *, data: dict[str, str]) -> dict[str, Any]:
    """The object to store: replacing ``current`` at its resourceVersion, or created anew."""
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "labels": {"app.kubernetes.io/managed-by": "agent-identity-operator"},
    }
    if current:
        metadata["resourceVersion"] = current["metadata"]["resourceVersion"]
    return {"apiVersion": "v1", "kind": kind, "metadata": metadata, "data": data}


class KeyStore(StoredKeyRing):
    """The signing keys, mirrored as a public JWKS into a ConfigMap on every sync."""

    secret_name, material_field = SECRET_NAME, PEM_FIELD
    new_material = staticmethod(new_private_pem)

    def signing_key(self) -> SigningKey:
        return self.active()

    def jwks(self) -> dict[str, Any]:
        return KeySet(self.current().keys).jwks()

    def synced(self, ring: KeyRing) -> None:
        jwks = json.dumps(KeySet(ring.keys).jwks(), sort_keys=True)
        current = self.kube.get_stored("ConfigMap", self.namespace, CONFIGMAP_NAME)
        if current and (current.get("data") or {}).get("jwks.json") == jwks:
            return
        body = stored_body(self.namespace, "ConfigMap", CONFIGMAP_NAME, current, data={"jwks.json": jwks})
        try:
            self.kube.store(body)
        except KubeError as error:
            if not error.conflict:  # a concurrent mirror of the same keys is fine
                raise


class SealKeys(StoredKeyRing):
    """The HMAC keys of creator seals (see :mod:`seal`): seal with the active key, check against
    any kept key, and re-read the Secret once when a seal names a key another replica just made."""

    secret_name, material_field = SEAL_SECRET_NAME, "secret"
    new_material = staticmethod(random_material)
    RESYNC_INTERVAL = 1.0  # seconds: at most one re-read a second for unknown keys

    def __init__(
        self, kube: Kube, *, namespace: str, period: timedelta, publish_ahead: timedelta, clock: Callable[[], datetime]
    ) -> None:
        super().__init__(kube, namespace=namespace, period=period, publish_ahead=publish_ahead, clock=clock)
        self._last_resync = 0.0

    def seal(self, *, namespace: str, name: str, spec: Mapping[str, Any], creator: str) -> str:
        nonce = secrets.token_urlsafe(12)
        return make_seal(self.active(), namespace=namespace, name=name, spec=spec, creator=creator, now=self.clock(), nonce=nonce)

    def binding(self, value: str, uid: str) -> str | None:
        """The binding of the seal ``value`` to the object ``uid`` (see :func:`seal.binding`)."""
        return seal_binding(self.current(), value, uid)

    def bound(self, value: str, uid: str, claimed: str | None) -> bool:
        return seal_bound(self.current(), value, uid, claimed)

    def problem(self, body: Mapping[str, Any], *, created_at: datetime) -> str | None:
        """Why ``body``'s creator stamp is not to be trusted, or None when its seal holds."""
        metadata = body.get("metadata") or {}
        annotations = metadata.get("annotations") or {}
        value = annotations.get(ANNOTATION_SEAL)
        ring = self.current()
        kid = seal_kid(value) if value else None
        if kid and ring.find(kid) is None and time.monotonic() - self._last_resync >= self.RESYNC_INTERVAL:
            self._last_resync = time.monotonic()
            ring = self.sync()
        return check_seal(
            ring,
            value,
            namespace=str(metadata.get("namespace", "")),
            name=str(metadata.get("name", "")),
            spec=body.get("spec") or {},
            creator=annotations.get(ANNOTATION_CREATOR),
            created_at=created_at,
        )

    def creator_of(self, identity: AgentIdentity) -> Creator | None:
        """The creator of ``identity`` if its seal holds, else None (nobody is vouched for)."""
        created_at = parse_timestamp(identity.metadata.creation_timestamp)
        return None if self.problem(identity.body, created_at=created_at) else Creator.from_identity(identity)


def discovery_document(issuer: str) -> dict[str, Any]:
    return {
        "issuer": issuer,
        "jwks_uri": f"{issuer.rstrip('/')}/.well-known/jwks.json",
        "id_token_signing_alg_values_supported": ["ES256"],
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "claims_supported": ["iss", "sub", "aud", "exp", "iat", "nbf", "jti", "act", "scope", "task", "profile", "risk_level"],
    }


class Signer:
    """Signs one identity's delegation assertion with the current key."""

    def __init__(self, store: KeyStore, *, issuer: str, trust_domain: str) -> None:
        self.store, self.issuer, self.trust_domain = store, issuer, trust_domain

    def __call__(self, identity: AgentIdentity, provenance: Provenance, now: datetime) -> str:
        claims = assertion_claims(
            identity,
            chain=list(provenance.chain),
            expires_at=provenance.expires_at,
            issuer=self.issuer,
            trust_domain=self.trust_domain,
            now=now,
            profile=provenance.profile,
            risk_level=provenance.risk_level,
        )
        return sign(claims, self.store.signing_key())
