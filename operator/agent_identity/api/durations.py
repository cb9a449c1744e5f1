"""TTL syntax and arithmetic. Pure: every function takes ``now`` instead of reading a clock.

The TTL syntax is the subset of Go durations that people write for short-lived credentials
(``90s``, ``10m``, ``1h30m``); the CRD's CEL rule accepts exactly the same strings, so the schema
and this module can never disagree about what is valid.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta

TTL_PATTERN = r"^([0-9]{1,5}h)?([0-9]{1,6}m)?([0-9]{1,7}s)?$"
MIN_TTL = timedelta(seconds=10)  # below this the apiserver's 10 s token cache makes TTL meaningless
MAX_TTL = timedelta(hours=24)  # profiles narrow this further; longer lives are not "just in time"
# TokenRequest refuses expirationSeconds below 10 minutes; shorter TTLs are enforced by deletion.
TOKEN_MIN_EXPIRATION = timedelta(minutes=10)

_TTL_RE = re.compile(TTL_PATTERN)


class InvalidTTLError(ValueError):
    """The TTL string is not a duration this operator accepts."""


def parse_ttl(ttl: str) -> timedelta:
    """``"1h30m"`` -> 5400 s. Raises :class:`InvalidTTLError` with the reason."""
    try:
        duration = parse_duration(ttl)
    except InvalidTTLError as error:
        raise InvalidTTLError(f"ttl {error}") from None
    if not MIN_TTL <= duration <= MAX_TTL:
        raise InvalidTTLError(
            f"ttl {ttl!r} is outside the allowed range {format_duration(MIN_TTL)} to {format_duration(MAX_TTL)}"
        )
    return duration


def parse_duration(text: str) -> timedelta:
    """Like :func:`parse_ttl` without the TTL bounds (for settings such as the retention period)."""
    match = _TTL_RE.fullmatch(text)
    if not text or match is None:
        raise InvalidTTLError(f"{text!r} is not a duration such as 90s, 10m or 1h30m")
    hours, minutes, seconds = (int(group[:-1]) if group else 0 for group in match.groups())
    return timedelta(hours=hours, minutes=minutes, seconds=seconds)


def format_duration(duration: timedelta) -> str:
    """A duration in the TTL syntax, or ``-`` style negatives for overdue deadlines (``-5s``)."""
    total = int(duration.total_seconds())
    sign = "-" if total < 0 else ""
    total = abs(total)
    hours, rest = divmod(total, 3600)
    minutes, seconds = divmod(rest, 60)
    parts = [f"{value}{unit}" for value, unit in ((hours, "h"), (minutes, "m"), (seconds, "s")) if value]
    return sign + ("".join(parts) or "0s")


def identity_expires_at(*, created_at: datetime, ttl: timedelta, delegator_expires_at: datetime | None) -> datetime:
    """The identity's deadline: its own TTL from creation, never later than its delegator's.

    The clock starts at the object's creationTimestamp, a persisted field, so a crash, a restart
    or a slow first reconcile never moves the deadline: the requester asked for ``ttl`` from then.
    """
    own = created_at + ttl
    return own if delegator_expires_at is None else min(own, delegator_expires_at)


def token_expiration_seconds(*, now: datetime, expires_at: datetime) -> int:
    """What to ask TokenRequest for: cover the remaining TTL, but never below the apiserver floor."""
    remaining = math.ceil((expires_at - now).total_seconds())
    return max(remaining, int(TOKEN_MIN_EXPIRATION.total_seconds()))


def token_needs_refresh(
    *, now: datetime, token_issued_at: datetime, token_expires_at: datetime, identity_expires_at: datetime
) -> bool:
    """True when the apiserver granted less than the identity's life and the token is 80 % used.

    The apiserver may cap a TokenRequest (``--service-account-max-token-expiration``); the identity
    then keeps working by getting a fresh token before the old one runs out.
    """
    if token_expires_at >= identity_expires_at:
        return False
    return now >= token_refresh_at(token_issued_at=token_issued_at, token_expires_at=token_expires_at)


def token_refresh_at(*, token_issued_at: datetime, token_expires_at: datetime) -> datetime:
    return token_issued_at + (token_expires_at - token_issued_at) * 0.8


def next_look(*, expires_at: datetime, token_issued_at: datetime, token_expires_at: datetime) -> datetime:
    """When a Ready identity needs looking at again: its expiry, or before then the refresh of a
    token the API server granted for less than the identity's lifetime."""
    if token_expires_at < expires_at:
        return min(expires_at, token_refresh_at(token_issued_at=token_issued_at, token_expires_at=token_expires_at))
    return expires_at


def parse_timestamp(value: str) -> datetime:
    """RFC 3339 as Kubernetes writes it (``2026-11-28T20:00:00Z``) -> aware datetime."""
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def format_timestamp(moment: datetime) -> str:
    """Aware datetime -> RFC 3339 with second precision in UTC, as Kubernetes writes it."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
