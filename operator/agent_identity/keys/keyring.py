"""Rotating key sets, pure: the signing keys of delegation assertions and the HMAC keys of creator
seals rotate by the same rule.

A new key is published ``publish_ahead`` before it is used, so every replica has read it before
anything made with it reaches them; a key is dropped only when nothing it made can still be in
use (``MAX_TTL`` after its successor took over). Keys are stored oldest first, as JSON in a Secret.
"""

from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from agent_identity.api.durations import MAX_TTL, format_timestamp, parse_timestamp


@dataclass(frozen=True)
class Key:
    kid: str
    created_at: datetime
    material: str = field(repr=False)  # a PEM private key or a random secret: never in a repr or a log line


def new_kid(now: datetime) -> str:
    return f"{now.strftime('%Y%m%dT%H%M%SZ')}-{uuid.uuid4().hex[:8]}"


def random_material() -> str:
    """256 random bits, URL-safe text: an HMAC key."""
    return secrets.token_urlsafe(32)


@dataclass(frozen=True)
class KeyRing:
    """Oldest first. The active key is the newest one that has been published long enough."""

    keys: tuple[Key, ...]

    def active(self, *, now: datetime, publish_ahead: timedelta) -> Key:
        ready = [key for key in self.keys if key.created_at + publish_ahead <= now]
        return ready[-1] if ready else self.keys[0]  # the very first key is used at once

    def find(self, kid: str) -> Key | None:
        return next((key for key in self.keys if key.kid == kid), None)

    def to_json(self, *, material_field: str) -> str:
        return json.dumps(
            [{"kid": k.kid, "createdAt": format_timestamp(k.created_at), material_field: k.material} for k in self.keys]
        )

    @classmethod
    def from_json(cls, text: str, *, material_field: str) -> KeyRing:
        return cls(
            tuple(
                Key(kid=item["kid"], created_at=parse_timestamp(item["createdAt"]), material=item[material_field])
                for item in json.loads(text)
            )
        )


def rotate(
    ring: KeyRing | None, *, now: datetime, period: timedelta, publish_ahead: timedelta, new_material: Callable[[], str]
) -> KeyRing:
    """The key ring at ``now``: a first key, a new key once the newest is ``period`` old, and keys
    dropped only when nothing they made can still be valid."""
    current = list(ring.keys) if ring else []
    if not current:
        return KeyRing((Key(new_kid(now), now, new_material()),))  # used at once: there is no older key
    if now - current[-1].created_at >= period:
        current.append(Key(new_kid(now), now, new_material()))
    kept = []
    for index, key in enumerate(current):
        successor = current[index + 1] if index + 1 < len(current) else None
        # A key is used until its successor takes over; what it made lives at most MAX_TTL more.
        stopped = successor.created_at + publish_ahead if successor else None
        if stopped is None or now < stopped + MAX_TTL:
            kept.append(key)
    return KeyRing(tuple(kept))
