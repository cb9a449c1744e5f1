"""The signing keys' home: a Secret in the operator's namespace (so rotation survives restarts and
is shared by replicas), mirrored as a public JWKS into a ConfigMap for in-cluster verifiers, and
served over HTTP at ``/.well-known/jwks.json`` with an OpenID discovery document.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from .api import AgentIdentity
from .builders import Provenance
from .kube import Kube, KubeError
from .signing import KeySet, SigningKey, assertion_claims, rotate, sign

log = logging.getLogger(__name__)

SECRET_NAME = "agent-identity-signing-keys"
CONFIGMAP_NAME = "agent-identity-jwks"
KEYS_FIELD = "keys.json"


class KeyStore:
    def __init__(
        self,
        kube: Kube,
        *,
        namespace: str,
        period: timedelta,
        publish_ahead: timedelta,
        clock: Callable[[], datetime],
    ) -> None:
        self.kube, self.namespace, self.period, self.publish_ahead, self.clock = kube, namespace, period, publish_ahead, clock
        self._lock = threading.Lock()
        self._keys: KeySet | None = None

    def signing_key(self) -> SigningKey:
        keys = self.current()
        return keys.signing_key(now=self.clock(), publish_ahead=self.publish_ahead)

    def current(self) -> KeySet:
        with self._lock:
            keys = self._keys
        if keys is None or self.clock() - keys.keys[-1].created_at >= self.period:
            keys = self.sync()
        return keys

    def sync(self) -> KeySet:
        """Load, rotate if due, and write back; on a write conflict another replica won: re-read."""
        for _ in range(5):
            secret = self.kube.get_stored("Secret", self.namespace, SECRET_NAME)
            stored = KeySet.from_json(base64.b64decode(secret["data"][KEYS_FIELD]).decode()) if secret else None
            keys = rotate(stored, now=self.clock(), period=self.period, publish_ahead=self.publish_ahead)
            if keys == stored:
                break
            body = self._body(
                "Secret", SECRET_NAME, secret, data={KEYS_FIELD: base64.b64encode(keys.to_json().encode()).decode()}
            )
            try:
                self.kube.store(body)
            except KubeError as error:
                if error.conflict:
                    continue
                raise
            log.info("signing keys rotated: %s", ", ".join(key.kid for key in keys.keys))
            break
        self._mirror(keys)
        with self._lock:
            self._keys = keys
        return keys

    def _body(self, kind: str, name: str, current: dict[str, Any] | None, *, data: dict[str, str]) -> dict[str, Any]:
        """The object to store: replacing ``current`` at its resourceVersion, or created anew."""
        metadata: dict[str, Any] = {
            "name": name,
            "namespace": self.namespace,
            "labels": {"app.kubernetes.io/managed-by": "agent-identity-operator"},
        }
        if current:
            metadata["resourceVersion"] = current["metadata"]["resourceVersion"]
        return {"apiVersion": "v1", "kind": kind, "metadata": metadata, "data": data}

    def _mirror(self, keys: KeySet) -> None:
        jwks = json.dumps(keys.jwks(), sort_keys=True)
        current = self.kube.get_stored("ConfigMap", self.namespace, CONFIGMAP_NAME)
        if current and (current.get("data") or {}).get("jwks.json") == jwks:
            return
        body = self._body("ConfigMap", CONFIGMAP_NAME, current, data={"jwks.json": jwks})
        try:
            self.kube.store(body)
        except KubeError as error:
            if not error.conflict:  # a concurrent mirror of the same keys is fine
                raise

    def run_rotation(self, stop: threading.Event, *, every: timedelta) -> None:
        """Rotates on schedule until ``stop`` is set (a daemon thread of the operator)."""
        while not stop.wait(every.total_seconds()):
            try:
                self.sync()
            except KubeError as error:
                log.warning("key rotation failed, retrying in %s: %s", every, error)


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
