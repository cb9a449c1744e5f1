"""``kubectl agent verify`` offline (no cluster): issuer and audience are required unless an
``--insecure-any-*`` flag says otherwise."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agent_identity.keys.signing import KeySet, assertion_claims, new_key, sign
from agent_identity.sdk.cli import main

from .factories import identity

ISSUER = "https://agent-identity.example"


@pytest.fixture
def assertion(tmp_path: Path) -> tuple[str, str]:
    """A currently valid assertion for audience ``vault`` and the path of a JWKS file that verifies it."""
    now = datetime.now(UTC).replace(microsecond=0)
    key = new_key(now)
    claims = assertion_claims(
        identity("fetcher", token={"audiences": ["vault"]}),
        chain=["user:alice"],
        expires_at=now + timedelta(minutes=5),
        issuer=ISSUER,
        trust_domain="example.org",
        now=now,
        profile=None,
        risk_level=None,
    )
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps(KeySet((key,)).jwks()))
    return sign(claims, key), str(jwks)


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["verify", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_the_right_issuer_and_audience_verify(assertion: tuple[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    token, jwks = assertion
    code, out, err = run(capsys, token, "--jwks", jwks, "--issuer", ISSUER, "--audience", "vault")
    assert code == 0, err
    assert out.startswith("valid assertion for support/fetcher") and "on behalf of: user:alice" in out


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--audience", "vault"], "error: verify needs --issuer, the iss you trust"),
        (["--issuer", ISSUER], "error: verify needs --audience, the aud you expect"),
        ([], "error: verify needs --issuer"),
    ],
    ids=["no-issuer", "no-audience", "neither"],
)
def test_a_missing_issuer_or_audience_is_an_error(
    assertion: tuple[str, str], capsys: pytest.CaptureFixture[str], flags: list[str], words: str
) -> None:
    token, jwks = assertion
    code, out, err = run(capsys, token, "--jwks", jwks, *flags)
    assert code == 1 and out == ""
    assert err.startswith(words), err


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--issuer", "https://elsewhere.example", "--audience", "vault"], "wrong issuer"),
        (["--issuer", ISSUER, "--audience", "elsewhere"], "wrong audience"),
        (["--insecure-any-issuer", "--audience", "elsewhere"], "wrong audience"),
        (["--issuer", "https://elsewhere.example", "--insecure-any-audience"], "wrong issuer"),
    ],
    ids=["wrong-issuer", "wrong-audience", "any-issuer-wrong-audience", "any-audience-wrong-issuer"],
)
def test_a_wrong_issuer_or_audience_is_rejected(
    assertion: tuple[str, str], capsys: pytest.CaptureFixture[str], flags: list[str], words: str
) -> None:
    token, jwks = assertion
    code, _, err = run(capsys, token, "--jwks", jwks, *flags)
    assert code == 1 and err.startswith(f"error: assertion rejected: {words}"), err


@pytest.mark.parametrize(
    "flags",
    [
        ["--insecure-any-issuer", "--audience", "vault"],
        ["--issuer", ISSUER, "--insecure-any-audience"],
        ["--insecure-any-issuer", "--insecure-any-audience"],
    ],
    ids=["any-issuer", "any-audience", "both"],
)
def test_the_insecure_opt_outs_verify(assertion: tuple[str, str], capsys: pytest.CaptureFixture[str], flags: list[str]) -> None:
    token, jwks = assertion
    code, out, err = run(capsys, token, "--jwks", jwks, *flags)
    assert code == 0, err
    assert out.startswith("valid assertion")


def test_a_flag_and_its_opt_out_together_are_a_usage_error(
    assertion: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    token, jwks = assertion
    with pytest.raises(SystemExit) as usage:
        main(["verify", token, "--jwks", jwks, "--issuer", ISSUER, "--insecure-any-issuer", "--audience", "vault"])
    assert usage.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err
