"""Signed delegation assertions (JWT, ES256) and the rotating key set that signs them. Pure:
keys are created with ``cryptography``, time is a parameter, storage is the caller's.

An assertion tells a service outside Kubernetes who the agent is, on whose behalf it acts, for
which task, with which scopes, until when, in RFC 8693 terms: ``sub`` is the principal on whose
behalf the agent acts (the head of the delegation chain), ``act`` is the current actor (this
agent), and nested ``act`` claims are the prior actors, nearest first.

Key rotation never leaves a window in which a valid assertion cannot be verified:
- a new key is *published* (in the JWKS) ``publish_ahead`` before it signs anything, so verifiers
  with a cached JWKS already know it;
- a retired key stays published until every assertion it may have signed has expired
  (``MAX_TTL`` after it stopped signing).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm
from jwt.types import Options

from .api import AgentIdentity
from .durations import MAX_TTL, format_timestamp, parse_timestamp
from .rbac import atoms

ALGORITHM = "ES256"


@dataclass(frozen=True)
class SigningKey:
    kid: str
    created_at: datetime
    private_pem: str = field(repr=False)  # never in a repr, never in a log line

    def public_jwk(self) -> dict[str, Any]:
        key = serialization.load_pem_private_key(self.private_pem.encode(), password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        jwk: dict[str, Any] = json.loads(ECAlgorithm.to_jwk(key.public_key()))
        return {**jwk, "kid": self.kid, "use": "sig", "alg": ALGORITHM}


def new_key(now: datetime) -> SigningKey:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return SigningKey(kid=f"{now.strftime('%Y%m%dT%H%M%SZ')}-{uuid.uuid4().hex[:8]}", created_at=now, private_pem=pem.decode())


@dataclass(frozen=True)
class KeySet:
    """Oldest first. The signing key is the newest one that has been published long enough."""

    keys: tuple[SigningKey, ...]

    def signing_key(self, *, now: datetime, publish_ahead: timedelta) -> SigningKey:
        ready = [key for key in self.keys if key.created_at + publish_ahead <= now]
        return ready[-1] if ready else self.keys[0]  # the very first key signs at once

    def jwks(self) -> dict[str, Any]:
        return {"keys": [key.public_jwk() for key in self.keys]}

    def to_json(self) -> str:
        return json.dumps(
            [{"kid": k.kid, "createdAt": format_timestamp(k.created_at), "privatePem": k.private_pem} for k in self.keys]
        )

    @classmethod
    def from_json(cls, text: str) -> KeySet:
        return cls(
            tuple(
                SigningKey(kid=item["kid"], created_at=parse_timestamp(item["createdAt"]), private_pem=item["privatePem"])
                for item in json.loads(text)
            )
        )


def rotate(keys: KeySet | None, *, now: datetime, period: timedelta, publish_ahead: timedelta) -> KeySet:
    """The key set at ``now``: a first key, a new key once the newest is ``period`` old, and keys
    dropped only when nothing they signed can still be valid."""
    current = list(keys.keys) if keys else []
    if not current:
        return KeySet((new_key(now),))  # signs at once: there is no older key to sign meanwhile
    if now - current[-1].created_at >= period:
        current.append(new_key(now))
    kept = []
    for index, key in enumerate(current):
        successor = current[index + 1] if index + 1 < len(current) else None
        # A key signs until its successor takes over; its assertions live at most MAX_TTL more.
        stopped_signing = successor.created_at + publish_ahead if successor else None
        if stopped_signing is None or now < stopped_signing + MAX_TTL:
            kept.append(key)
    return KeySet(tuple(kept))


# -- assertions ---------------------------------------------------------------------------------------


def agent_uri(*, trust_domain: str, namespace: str, name: str) -> str:
    """The agent's stable identifier, SPIFFE-style: ``spiffe://<trust domain>/ns/<ns>/agent/<name>``."""
    return f"spiffe://{trust_domain}/ns/{namespace}/agent/{name}"


def principal_uri(principal: str, *, trust_domain: str) -> str:
    """A chain entry as a subject: agents become their URI, people and workloads stay as written."""
    if principal.startswith("agent:"):
        namespace, _, name = principal.removeprefix("agent:").partition("/")
        return agent_uri(trust_domain=trust_domain, namespace=namespace, name=name)
    return principal


def scope_string(identity: AgentIdentity) -> str:
    """Space-separated permissions, ``[group/]resource:verb[:name]`` (RFC 8693 ``scope``)."""
    entries = []
    for rule in identity.spec.scopes:
        for atom in atoms(rule):
            resource = f"{atom.api_group}/{atom.resource}" if atom.api_group else atom.resource
            entries.append(f"{resource}:{atom.verb}" + (f":{atom.resource_name}" if atom.resource_name else ""))
    return " ".join(dict.fromkeys(entries))


def actor_claim(chain: list[str], *, agent: str, trust_domain: str) -> dict[str, Any] | None:
    """Nested ``act``: this agent outermost, then each prior agent actor, nearest first."""
    prior = [principal_uri(p, trust_domain=trust_domain) for p in chain[1:]]
    claim: dict[str, Any] | None = None
    for actor in prior:  # oldest first, so the nearest ends up outermost under this agent
        claim = {"sub": actor, **({"act": claim} if claim else {})}
    return {"sub": agent, **({"act": claim} if claim else {})}


def assertion_claims(
    identity: AgentIdentity,
    *,
    chain: list[str],
    expires_at: datetime,
    issuer: str,
    trust_domain: str,
    now: datetime,
    profile: str | None,
    risk_level: str | None,
) -> dict[str, Any]:
    agent = agent_uri(trust_domain=trust_domain, namespace=identity.metadata.namespace, name=identity.metadata.name)
    audiences = list(identity.spec.token.audiences or []) if identity.spec.token else []
    claims: dict[str, Any] = {
        "iss": issuer,
        "sub": principal_uri(chain[0], trust_domain=trust_domain) if chain else agent,
        "aud": audiences or [issuer],
        "iat": int(now.timestamp()),
        "nbf": int(now.timestamp()),
        "exp": int(expires_at.timestamp()),
        "jti": str(uuid.uuid4()),
        "scope": scope_string(identity),
        "task": identity.spec.task,
        "profile": profile,
        "risk_level": risk_level,
        "delegation_chain": chain,
        "kubernetes": {"namespace": identity.metadata.namespace, "name": identity.metadata.name, "uid": identity.metadata.uid},
    }
    if chain:
        claims["act"] = actor_claim(chain, agent=agent, trust_domain=trust_domain)
    return claims


def sign(claims: dict[str, Any], key: SigningKey) -> str:
    return jwt.encode(claims, key.private_pem, algorithm=ALGORITHM, headers={"kid": key.kid, "typ": "JWT"})


class InvalidAssertion(Exception):
    """An assertion that must not be trusted, with a reason a person can act on."""


def verify(
    token: str, *, jwks: dict[str, Any], audience: str | None, issuer: str | None = None, leeway: int = 0
) -> dict[str, Any]:
    """The claims of a valid assertion; :class:`InvalidAssertion` saying why otherwise."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.DecodeError as error:
        raise InvalidAssertion(f"not a JWT: {error}") from None
    kid = header.get("kid")
    matching = [key for key in jwks.get("keys", []) if key.get("kid") == kid]
    if not matching:
        raise InvalidAssertion(f"unknown signing key {kid!r}: not in the JWKS (rotated out, or not ours)")
    public_key = ECAlgorithm.from_jwk(json.dumps(matching[0]))
    if not isinstance(public_key, ec.EllipticCurvePublicKey):  # a JWKS entry with a private part is not ours
        raise InvalidAssertion(f"signing key {kid!r} in the JWKS is not a public EC key")
    options: Options = {"require": ["exp", "iat", "nbf", "sub", "iss"], "verify_aud": audience is not None}
    try:
        return dict(
            jwt.decode(
                token, public_key, algorithms=[ALGORITHM], audience=audience, issuer=issuer, leeway=leeway, options=options
            )
        )
    except jwt.ExpiredSignatureError:
        raise InvalidAssertion("expired: the identity's TTL has passed") from None
    except jwt.ImmatureSignatureError:
        raise InvalidAssertion("not yet valid (nbf is in the future)") from None
    except jwt.InvalidAudienceError:
        raise InvalidAssertion(f"wrong audience: not issued for {audience!r}") from None
    except jwt.InvalidIssuerError:
        raise InvalidAssertion(f"wrong issuer: not issued by {issuer!r}") from None
    except jwt.InvalidSignatureError:
        raise InvalidAssertion("bad signature: the assertion was altered or signed by someone else") from None
    except jwt.PyJWTError as error:
        raise InvalidAssertion(f"invalid: {error}") from None
