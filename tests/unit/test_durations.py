from datetime import timedelta

import pytest

from agent_identity.api.durations import (
    InvalidTTLError,
    format_duration,
    identity_expires_at,
    parse_ttl,
    token_expiration_seconds,
    token_needs_refresh,
)

from .factories import CREATED


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("10s", 10), ("90s", 90), ("10m", 600), ("1h", 3600), ("1h30m", 5400), ("2m5s", 125), ("24h", 86400)],
)
def test_parse_ttl_accepts_go_style_durations(text: str, seconds: int) -> None:
    assert parse_ttl(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("", "not a duration"),
        ("90", "not a duration"),
        ("1d", "not a duration"),
        ("5m1h", "not a duration"),
        ("-5s", "not a duration"),
        ("9s", "outside the allowed range 10s to 24h"),
        ("24h1s", "outside the allowed range"),
    ],
)
def test_parse_ttl_refuses_with_the_reason(text: str, complaint: str) -> None:
    with pytest.raises(InvalidTTLError, match=complaint):
        parse_ttl(text)


def test_format_duration_round_trips_and_shows_overdue() -> None:
    assert format_duration(timedelta(seconds=5400)) == "1h30m"
    assert format_duration(timedelta(seconds=0)) == "0s"
    assert format_duration(timedelta(seconds=-5)) == "-5s"


def test_expiry_is_creation_plus_ttl() -> None:
    assert identity_expires_at(created_at=CREATED, ttl=timedelta(seconds=90), delegator_expires_at=None) == CREATED + timedelta(
        seconds=90
    )


def test_a_delegate_never_outlives_its_delegator() -> None:
    delegator_deadline = CREATED + timedelta(seconds=30)
    assert (
        identity_expires_at(created_at=CREATED, ttl=timedelta(minutes=5), delegator_expires_at=delegator_deadline)
        == delegator_deadline
    )
    # a delegate asking for less than its delegator has left keeps its own, shorter life
    assert identity_expires_at(
        created_at=CREATED, ttl=timedelta(seconds=10), delegator_expires_at=delegator_deadline
    ) == CREATED + timedelta(seconds=10)


@pytest.mark.parametrize(
    ("remaining_s", "asked_s"),
    [(90, 600), (599.2, 600), (601, 601), (3600.4, 3601)],
)
def test_token_expiration_covers_the_ttl_but_respects_the_apiserver_floor(remaining_s: float, asked_s: int) -> None:
    assert token_expiration_seconds(now=CREATED, expires_at=CREATED + timedelta(seconds=remaining_s)) == asked_s


def test_a_capped_token_is_refreshed_at_80_percent_of_its_life() -> None:
    issued, token_expiry, identity_expiry = CREATED, CREATED + timedelta(hours=1), CREATED + timedelta(hours=3)
    kwargs = {"token_issued_at": issued, "token_expires_at": token_expiry, "identity_expires_at": identity_expiry}
    assert not token_needs_refresh(now=CREATED + timedelta(minutes=47), **kwargs)
    assert token_needs_refresh(now=CREATED + timedelta(minutes=48), **kwargs)
    # a token that outlives the identity is never refreshed: the operator retires it first
    assert not token_needs_refresh(
        now=CREATED + timedelta(minutes=59),
        token_issued_at=issued,
        token_expires_at=token_expiry,
        identity_expires_at=token_expiry,
    )
