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
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm
from jwt.types import Options

from agent_identity.api.v1alpha1 import AgentIdentity
from agent_identity.keys.keyring import Key, KeyRing, new_kid
from agent_identity.policy.rbac import atoms

ALGORITHM = "ES256"


SigningKey = Key
PEM_FIELD = "privatePem"


def new_private_pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return pem.decode()


def new_key(now: datetime) -> SigningKey:
    return Key(kid=new_kid(now), created_at=now, material=new_private_pem())


def public_jwk(key: SigningKey) -> dict[str, Any]:
    private = serialization.load_pem_private_key(key.material.encode(), password=None)
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    jwk: dict[str, Any] = json.loads(ECAlgorithm.to_jwk(private.public_key()))
    return {**jwk, "kid": key.kid, "use": "sig", "alg": ALGORITHM}


@dataclass(frozen=True)
class KeySet(KeyRing):
    """The signing keys: the newest one published long enough signs (see :mod:`keyring`)."""

    def signing_key(self, *, now: datetime, publish_ahead: timedelta) -> SigningKey:
        return self.active(now=now, publish_ahead=publish_ahead)

    def jwks(self) -> dict[str, Any]:
        return {"keys": [public_jwk(key) for key in self.keys]}

    def to_json(self, *, material_field: str = PEM_FIELD) -> str:
        return super().to_json(material_field=material_field)

    @classmethod
    def from_json(cls, text: str, *, material_field: str = PEM_FIELD) -> KeySet:
        return cls(KeyRing.from_json(text, material_field=material_field).keys)


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
    audiences = identity.spec.audiences
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
    return jwt.encode(claims, key.material, algorithm=ALGORITHM, headers={"kid": key.kid, "typ": "JWT"})


class InvalidAssertion(Exception):
    """An assertion that must not be trusted, with a reason a person can act on."""


REQUIRED_CLAIMS = ("exp", "iat", "nbf", "iss", "aud", "sub")
"""Claims an assertion must carry to be trusted; the operator always sets them all."""


class InsecureVerification(ValueError):
    """``verify`` was called without an expected issuer or audience and without the explicit
    opt-out: a mistake of the caller, not of the assertion."""


def _expectations(issuer: str | None, audience: str | None, *, any_issuer: bool, any_audience: bool) -> None:
    """Refuse a verification that would silently skip the issuer or audience check."""
    if issuer and any_issuer:
        raise InsecureVerification("give an expected issuer or insecure_any_issuer=True, not both")
    if audience and any_audience:
        raise InsecureVerification("give an expected audience or insecure_any_audience=True, not both")
    if not issuer and not any_issuer:
        raise InsecureVerification(
            "an expected issuer is required (the operator's --issuer URL): without it an assertion signed by"
            " any key in the JWKS for any issuer would be accepted; pass insecure_any_issuer=True"
            " (kubectl agent verify --insecure-any-issuer) only if you mean that"
        )
    if not audience and not any_audience:
        raise InsecureVerification(
            "an expected audience is required (your service's name in spec.token.audiences): without it an"
            " assertion issued for any other service would be accepted; pass insecure_any_audience=True"
            " (kubectl agent verify --insecure-any-audience) only if you mean that"
        )


def jwks_key(kid: object, jwks: dict[str, Any]) -> ec.EllipticCurvePublicKey:
    """The public key ``kid`` names in ``jwks``; :class:`InvalidAssertion` when it is not there or
    not a public EC key (a JWKS entry with a private part is not ours)."""
    matching = [key for key in jwks.get("keys", []) if key.get("kid") == kid]
    if not matching:
        raise InvalidAssertion(f"unknown signing key {kid!r}: not in the JWKS (rotated out, or not ours)")
    public_key = ECAlgorithm.from_jwk(json.dumps(matching[0]))
    if not isinstance(public_key, ec.EllipticCurvePublicKey):
        raise InvalidAssertion(f"signing key {kid!r} in the JWKS is not a public EC key")
    return public_key


def verify(
    token: str,
    *,
    jwks: dict[str, Any],
    issuer: str | None = None,
    audience: str | None = None,
    insecure_any_issuer: bool = False,
    insecure_any_audience: bool = False,
    leeway: int = 0,
) -> dict[str, Any]:
    """The claims of a valid assertion; :class:`InvalidAssertion` saying why otherwise.

    ``issuer`` (the operator's ``--issuer``) and ``audience`` (the verifying service, one of the
    identity's ``spec.token.audiences``) are required: pyjwt checks ``iss`` and ``aud`` against
    them, and every claim of :data:`REQUIRED_CLAIMS` must be present. Leaving one out raises
    :class:`InsecureVerification` unless its loudly named opt-out, ``insecure_any_issuer=True`` or
    ``insecure_any_audience=True``, says the caller accepts any issuer or any audience (the claim
    must still be present). The signature, ``exp``, ``nbf`` and ``iat`` are always checked.
    """
    _expectations(issuer, audience, any_issuer=insecure_any_issuer, any_audience=insecure_any_audience)
    try:
        header = jwt.get_unverified_header(token)
    except jwt.DecodeError as error:
        raise InvalidAssertion(f"not a JWT: {error}") from None
    public_key = jwks_key(header.get("kid"), jwks)
    options: Options = {
        "require": list(REQUIRED_CLAIMS),
        "verify_iss": not insecure_any_issuer,
        "verify_aud": not insecure_any_audience,
    }
    try:
        return dict(
            jwt.decode(
                token,
                public_key,
                algorithms=[ALGORITHM],
                issuer=None if insecure_any_issuer else issuer,
                audience=None if insecure_any_audience else audience,
                leeway=leeway,
                options=options,
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
    except jwt.MissingRequiredClaimError as error:
        raise InvalidAssertion(f"missing claim {error.claim!r}: not an assertion of this operator") from None
    except jwt.PyJWTError as error:
        raise InvalidAssertion(f"invalid: {error}") from None
