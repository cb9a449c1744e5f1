"""The creator seal: what it binds, what breaks it, and key rotation that never breaks a live one."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from agent_identity.keys.keyring import KeyRing, random_material, rotate
from agent_identity.keys.seal import check, seal

from .factories import CREATED

SPEC: dict[str, Any] = {"task": "t", "ttl": "1m", "scopes": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}]}
ALICE = '{"username":"alice"}'
PERIOD, AHEAD = timedelta(hours=24), timedelta(minutes=10)


def ring_at(offset: timedelta, ring: KeyRing | None = None) -> KeyRing:
    return rotate(ring, now=CREATED + offset, period=PERIOD, publish_ahead=AHEAD, new_material=random_material)


def sealed(ring: KeyRing, **changes: Any) -> str:
    values: dict[str, Any] = {"namespace": "support", "name": "crawler", "spec": SPEC, "creator": ALICE, "now": CREATED}
    values["nonce"] = "n0"
    return seal(ring.active(now=CREATED, publish_ahead=AHEAD), **(values | changes))


def checked(ring: KeyRing, value: str | None, **changes: Any) -> str | None:
    values: dict[str, Any] = {"namespace": "support", "name": "crawler", "spec": SPEC, "creator": ALICE, "created_at": CREATED}
    return check(ring, value, **(values | changes))


def test_a_seal_holds_for_exactly_the_object_it_was_made_for() -> None:
    ring = ring_at(timedelta())
    assert checked(ring, sealed(ring)) is None
    assert checked(ring, sealed(ring), created_at=CREATED + timedelta(seconds=3)) is None


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"name": "other"}, "copied from another object"),
        ({"namespace": "elsewhere"}, "copied from another object"),
        ({"creator": '{"username":"system:admin","groups":["system:masters"]}'}, "creator or spec was edited"),
        ({"spec": {**SPEC, "scopes": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]}}, "creator or spec was edited"),
        ({"created_at": CREATED + timedelta(hours=1)}, "replayed"),
    ],
)
def test_a_seal_moved_edited_or_replayed_is_refused(changes: dict[str, Any], words: str) -> None:
    ring = ring_at(timedelta())
    problem = checked(ring, sealed(ring), **changes)
    assert problem is not None and words in problem


@pytest.mark.parametrize(
    ("value", "words"),
    [
        (None, "no sealed creator stamp"),
        ("", "no sealed creator stamp"),
        ("v1.abc", "malformed"),
        ("v2.kid.1.mac", "malformed"),
        ("v1.kid.notanumber.mac", "malformed"),
    ],
)
def test_a_missing_or_malformed_seal_is_refused(value: str | None, words: str) -> None:
    problem = checked(ring_at(timedelta()), value)
    assert problem is not None and words in problem


def test_a_seal_made_with_a_key_we_do_not_hold_is_refused() -> None:
    ours, theirs = ring_at(timedelta()), ring_at(timedelta())
    problem = checked(ours, sealed(theirs))
    assert problem is not None and "unknown key" in problem


def test_rotation_keeps_every_live_seal_valid_then_drops_the_key() -> None:
    first = ring_at(timedelta())
    value = sealed(first)
    rotated = ring_at(PERIOD, first)
    assert len(rotated.keys) == 2
    assert rotated.active(now=CREATED + PERIOD, publish_ahead=AHEAD) == first.keys[0]  # the new key is not used yet
    assert rotated.active(now=CREATED + PERIOD + AHEAD, publish_ahead=AHEAD) == rotated.keys[1]
    assert checked(rotated, value) is None
    dropped = ring_at(PERIOD + AHEAD + timedelta(hours=24), rotated)
    assert first.keys[0].kid not in [key.kid for key in dropped.keys]
    assert "unknown key" in (checked(dropped, value) or "")
