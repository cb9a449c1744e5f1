"""Signed delegation assertions and key rotation, with time injected."""

from __future__ import annotations

import base64
import json
import re
from datetime import UTC, datetime, timedelta

import pytest

from agent_identity.api.durations import MAX_TTL
from agent_identity.keys.keyring import rotate
from agent_identity.keys.signing import (
    InsecureVerification,
    InvalidAssertion,
    KeySet,
    actor_claim,
    assertion_claims,
    new_private_pem,
    scope_string,
    sign,
    verify,
)

from .factories import CREATED, identity

PERIOD, AHEAD = timedelta(hours=24), timedelta(minutes=5)
ISSUER, DOMAIN = "https://agent-identity.example", "example.org"
CHAIN = ["user:alice", "agent:support/planner", "agent:support/crawler"]


def claims_for(**changes: object) -> dict:
    agent = identity(
        "fetcher",
        scopes=[
            {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]},
            {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get"], "resourceNames": ["web"]},
        ],
        token={"audiences": ["vault"]},
    )
    values: dict = {
        "chain": CHAIN,
        "expires_at": CREATED + timedelta(seconds=90),
        "issuer": ISSUER,
        "trust_domain": DOMAIN,
        "now": CREATED,
        "profile": "read-only",
        "risk_level": "low",
    }
    values.update(changes)
    return assertion_claims(agent, **values)


def test_claims_follow_rfc_8693_with_the_whole_chain_as_nested_actors() -> None:
    claims = claims_for()
    assert claims["sub"] == "user:alice"  # on whose behalf
    assert claims["act"] == {
        "sub": "spiffe://example.org/ns/support/agent/fetcher",  # the current actor
        "act": {
            "sub": "spiffe://example.org/ns/support/agent/crawler",
            "act": {"sub": "spiffe://example.org/ns/support/agent/planner"},
        },
    }
    assert claims["exp"] - claims["iat"] == 90 and claims["nbf"] == claims["iat"]
    assert claims["aud"] == ["vault"] and claims["iss"] == ISSUER
    assert claims["scope"] == "configmaps:get configmaps:list apps/deployments:get:web"
    assert claims["task"] == "collect incident notes" and claims["profile"] == "read-only" and claims["risk_level"] == "low"
    assert claims["delegation_chain"] == CHAIN


def test_an_identity_without_a_delegator_acts_for_itself() -> None:
    claims = claims_for(chain=[])
    assert claims["sub"] == "spiffe://example.org/ns/support/agent/fetcher"
    assert "act" not in claims


def test_a_single_hop_has_one_actor() -> None:
    assert actor_claim(["user:alice"], agent="spiffe://d/ns/n/agent/a", trust_domain="d") == {"sub": "spiffe://d/ns/n/agent/a"}


def test_scopes_are_space_separated_and_deduplicated() -> None:
    agent = identity(
        scopes=[
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]},
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]},
        ]
    )
    assert scope_string(agent) == "pods:get"


def keys_at(offset: timedelta, keys: KeySet | None = None) -> KeySet:
    """The signing keys at ``offset``, rotated as the key store rotates them (EC P-256 keys)."""
    ring = rotate(keys, now=CREATED + offset, period=PERIOD, publish_ahead=AHEAD, new_material=new_private_pem)
    return KeySet(ring.keys)


def test_a_signed_assertion_verifies_against_the_published_jwks() -> None:
    keys = keys_at(timedelta(0))
    token = sign(claims_for(), keys.signing_key(now=CREATED, publish_ahead=AHEAD))
    claims = verify(token, jwks=keys.jwks(), audience="vault", issuer=ISSUER, leeway=10**9)  # far from "now"
    assert claims["sub"] == "user:alice"


def test_the_jwks_never_carries_a_private_key() -> None:
    for jwk in keys_at(timedelta(0)).jwks()["keys"]:
        assert set(jwk) == {"kty", "crv", "x", "y", "kid", "use", "alg"}


def test_rotation_publishes_ahead_and_keeps_retired_keys_until_their_assertions_expire() -> None:
    first = keys_at(timedelta(0))
    assert len(first.keys) == 1
    same = keys_at(PERIOD - timedelta(seconds=1), first)
    assert same == first
    rotated = keys_at(PERIOD, first)
    assert len(rotated.keys) == 2
    new, old = rotated.keys[1], rotated.keys[0]
    # published, but the old key still signs until the new one has been visible for publish_ahead
    assert rotated.signing_key(now=CREATED + PERIOD, publish_ahead=AHEAD) == old
    assert rotated.signing_key(now=CREATED + PERIOD + AHEAD, publish_ahead=AHEAD) == new
    # the old key stays published until MAX_TTL after it stopped signing
    still = keys_at(PERIOD + AHEAD + MAX_TTL - timedelta(seconds=1), rotated)
    assert old in still.keys
    dropped = keys_at(PERIOD + AHEAD + MAX_TTL, rotated)
    assert old not in dropped.keys and new in dropped.keys


def test_an_assertion_signed_before_rotation_verifies_after_it() -> None:
    keys = keys_at(timedelta(0))
    token = sign(claims_for(), keys.signing_key(now=CREATED, publish_ahead=AHEAD))
    rotated = keys_at(PERIOD + AHEAD, keys)
    assert verify(token, jwks=rotated.jwks(), issuer=ISSUER, audience="vault", leeway=10**9)["sub"] == "user:alice"


def test_the_key_set_round_trips_through_its_secret_form() -> None:
    keys = keys_at(PERIOD, keys_at(timedelta(0)))
    assert KeySet.from_json(keys.to_json()) == keys


def _tamper(token: str) -> str:
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["scope"] = "*:*"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{forged}.{signature}"


@pytest.mark.parametrize(
    ("make", "audience", "words"),
    [
        (lambda token, keys: _tamper(token), "vault", "bad signature"),
        (lambda token, keys: token, "elsewhere", "wrong audience"),
        (lambda token, keys: "not-a-jwt", "vault", "not a JWT"),
        (lambda token, keys: sign(claims_for(), keys_at(timedelta(0)).keys[0]), "vault", "unknown signing key"),
    ],
    ids=["tampered", "wrong-audience", "garbage", "unknown-kid"],
)
def test_bad_assertions_are_rejected_with_the_reason(make, audience: str, words: str) -> None:  # type: ignore[no-untyped-def]
    keys = keys_at(timedelta(0))
    token = sign(claims_for(), keys.signing_key(now=CREATED, publish_ahead=AHEAD))
    with pytest.raises(InvalidAssertion, match=words):
        verify(make(token, keys), jwks=keys.jwks(), issuer=ISSUER, audience=audience, leeway=10**9)


def test_expired_and_not_yet_valid_assertions_are_rejected() -> None:
    keys = keys_at(timedelta(0))
    key = keys.signing_key(now=CREATED, publish_ahead=AHEAD)
    expired = sign(claims_for(), key)  # expired since 2026-11-28T12:01:30Z
    with pytest.raises(InvalidAssertion, match="expired"):
        verify(expired, jwks=keys.jwks(), issuer=ISSUER, audience="vault")
    future = datetime.now(UTC) + timedelta(hours=1)
    early = sign(claims_for(now=future, expires_at=future + timedelta(hours=1)), key)
    with pytest.raises(InvalidAssertion, match="not yet valid"):
        verify(early, jwks=keys.jwks(), issuer=ISSUER, audience="vault")


# --- issuer and audience are required --------------------------------------------------------------


def signed(**claim_changes: object) -> tuple[str, dict]:
    """A valid assertion and the JWKS that verifies it (``leeway`` below keeps it valid "now")."""
    keys = keys_at(timedelta(0))
    claims = {**claims_for(), **claim_changes}
    claims = {key: value for key, value in claims.items() if value is not None}
    return sign(claims, keys.signing_key(now=CREATED, publish_ahead=AHEAD)), keys.jwks()


LEEWAY = 10**9  # the assertions are signed at CREATED, far from "now"


def test_the_right_issuer_and_audience_are_accepted() -> None:
    token, jwks = signed()
    claims = verify(token, jwks=jwks, issuer=ISSUER, audience="vault", leeway=LEEWAY)
    assert claims["iss"] == ISSUER and claims["aud"] == ["vault"]


def test_without_an_expected_issuer_verify_refuses_to_run() -> None:
    token, jwks = signed()
    with pytest.raises(InsecureVerification, match=r"an expected issuer is required .*insecure_any_issuer=True"):
        verify(token, jwks=jwks, audience="vault", leeway=LEEWAY)
    with pytest.raises(InsecureVerification, match="an expected issuer is required"):
        verify(token, jwks=jwks, issuer="", audience="vault", leeway=LEEWAY)


def test_without_an_expected_audience_verify_refuses_to_run() -> None:
    token, jwks = signed()
    with pytest.raises(InsecureVerification, match=r"an expected audience is required .*insecure_any_audience=True"):
        verify(token, jwks=jwks, issuer=ISSUER, leeway=LEEWAY)
    with pytest.raises(InsecureVerification, match="an expected issuer is required"):  # neither: the issuer is said first
        verify(token, jwks=jwks, leeway=LEEWAY)


def test_the_expectations_are_checked_before_the_token_is_read() -> None:
    with pytest.raises(InsecureVerification):
        verify("not-a-jwt", jwks={"keys": []}, audience="vault")


def test_a_wrong_issuer_is_refused() -> None:
    token, jwks = signed()
    with pytest.raises(InvalidAssertion, match=re.escape("wrong issuer: not issued by 'https://elsewhere.example'")):
        verify(token, jwks=jwks, issuer="https://elsewhere.example", audience="vault", leeway=LEEWAY)


def test_a_wrong_audience_is_refused() -> None:
    token, jwks = signed()
    with pytest.raises(InvalidAssertion, match="wrong audience: not issued for 'elsewhere'"):
        verify(token, jwks=jwks, issuer=ISSUER, audience="elsewhere", leeway=LEEWAY)


def test_the_insecure_opt_outs_skip_only_their_own_check() -> None:
    token, jwks = signed()
    any_issuer = verify(token, jwks=jwks, audience="vault", insecure_any_issuer=True, leeway=LEEWAY)
    assert any_issuer["iss"] == ISSUER
    any_audience = verify(token, jwks=jwks, issuer=ISSUER, insecure_any_audience=True, leeway=LEEWAY)
    assert any_audience["aud"] == ["vault"]
    assert verify(token, jwks=jwks, insecure_any_issuer=True, insecure_any_audience=True, leeway=LEEWAY)["sub"] == "user:alice"
    # an opt-out never waives the other check
    with pytest.raises(InvalidAssertion, match="wrong audience"):
        verify(token, jwks=jwks, audience="elsewhere", insecure_any_issuer=True, leeway=LEEWAY)
    with pytest.raises(InvalidAssertion, match="wrong issuer"):
        verify(token, jwks=jwks, issuer="https://elsewhere.example", insecure_any_audience=True, leeway=LEEWAY)


def test_an_expectation_and_its_opt_out_together_are_refused() -> None:
    token, jwks = signed()
    with pytest.raises(InsecureVerification, match="not both"):
        verify(token, jwks=jwks, issuer=ISSUER, audience="vault", insecure_any_issuer=True, leeway=LEEWAY)
    with pytest.raises(InsecureVerification, match="not both"):
        verify(token, jwks=jwks, issuer=ISSUER, audience="vault", insecure_any_audience=True, leeway=LEEWAY)


@pytest.mark.parametrize("claim", ["exp", "iat", "nbf", "iss", "aud", "sub"])
def test_every_required_claim_must_be_present_even_with_the_opt_outs(claim: str) -> None:
    token, jwks = signed(**{claim: None})
    with pytest.raises(InvalidAssertion, match=f"missing claim '{claim}'"):
        verify(token, jwks=jwks, insecure_any_issuer=True, insecure_any_audience=True, leeway=LEEWAY)
