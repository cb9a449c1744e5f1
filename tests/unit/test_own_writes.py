"""Telling the watch echoes of the operator's own child writes from anyone else's changes."""

from __future__ import annotations

from agent_identity.kube.client import DELETED, OwnWrites

KEY = ("Secret", "team-a", "aid-x-token")


def test_an_event_carrying_our_last_written_version_is_an_echo() -> None:
    writes, foreign = OwnWrites(), []
    writes.begin(KEY)
    writes.finish(KEY, "41")
    assert writes.is_echo(KEY, "41", lambda: foreign.append(1))
    assert not writes.is_echo(KEY, "42", lambda: foreign.append(1))  # someone else wrote after us
    assert foreign == []  # decided at once: the caller enqueues


def test_an_echo_that_outruns_the_write_response_is_held_then_dropped() -> None:
    writes, foreign = OwnWrites(), []
    writes.begin(KEY)
    assert writes.is_echo(KEY, "41", lambda: foreign.append("41"))
    writes.finish(KEY, "41")
    assert foreign == []


def test_a_foreign_change_seen_during_our_write_is_reported_when_the_write_returns() -> None:
    writes, foreign = OwnWrites(), []
    writes.begin(KEY)
    writes.is_echo(KEY, "40", lambda: foreign.append("40"))  # someone else, just before us
    writes.is_echo(KEY, "41", lambda: foreign.append("41"))
    writes.finish(KEY, "41")
    assert foreign == ["40"]


def test_a_failed_write_reports_every_event_held_meanwhile() -> None:
    writes, foreign = OwnWrites(), []
    writes.begin(KEY)
    writes.is_echo(KEY, "40", lambda: foreign.append("40"))
    writes.finish(KEY, None)
    assert foreign == ["40"]
    assert not writes.is_echo(KEY, "40", lambda: None)


def test_our_deletion_is_an_echo_once_and_a_later_deletion_is_not() -> None:
    writes = OwnWrites()
    writes.begin(KEY)
    writes.finish(KEY, DELETED)
    assert writes.is_echo(KEY, DELETED, lambda: None)
    assert not writes.is_echo(KEY, DELETED, lambda: None)  # recreated and deleted by someone else
