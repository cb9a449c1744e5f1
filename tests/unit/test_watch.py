"""The list-and-watch loop every watch of the operator runs (engine/watch.py): resumes from the
last version when a session ends on time, and after a gap (410 Gone, a failed request) starts
again from now and asks for the gap to be made up for. Scripted sessions, no server."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from agent_identity.engine.watch import Watch
from agent_identity.kube.client import KubeError


def event(kind: str, version: str) -> dict[str, Any]:
    return {"type": kind, "object": {"metadata": {"name": "x", "resourceVersion": version}}}


class Scripted(Watch):
    def __init__(self, sessions: list[list[dict[str, Any]] | KubeError]) -> None:
        self.sessions = sessions
        self.started_from: list[str] = []
        self.delivered: list[tuple[str, str]] = []
        self.resumed = 0  # on_gap calls
        self.now = 100
        self.on_gap = self.count_gap

    @property
    def name(self) -> str:
        return "scripted"

    def current_version(self) -> str:
        self.now += 100  # the collection moved on
        return str(self.now)

    def count_gap(self) -> None:
        self.resumed += 1

    def events(self, resource_version: str) -> Iterator[dict[str, Any]]:
        self.started_from.append(resource_version)
        session = self.sessions.pop(0)
        if isinstance(session, KubeError):
            raise session
        yield from session

    def deliver(self, event_type: str, obj: dict[str, Any]) -> None:
        self.delivered.append((event_type, obj["metadata"]["resourceVersion"]))


def test_a_session_ended_on_time_resumes_where_it_stopped_bookmarks_included() -> None:
    watch = Scripted([[event("ADDED", "101"), event("BOOKMARK", "105")], [event("DELETED", "106")]])
    watch.begin()
    watch.step()
    watch.step()
    assert watch.started_from == ["200", "105"]
    assert watch.delivered == [("ADDED", "101"), ("DELETED", "106")]  # a bookmark is not an event
    assert watch.resumed == 0


def test_a_410_or_a_failed_session_resumes_from_now_and_asks_for_the_gap_to_be_made_up_for() -> None:
    gone = {"type": "ERROR", "object": {"code": 410}}
    unreachable = KubeError(method="WATCH", path="/x", status=0, reason="Unreachable", message="connection refused")
    watch = Scripted([[event("MODIFIED", "101"), gone], [], unreachable, []])
    watch.begin()
    watch.step()  # 410 after one event
    watch.step()  # resumes from now; the gap is asked to be made up for
    with pytest.raises(KubeError):
        watch.step()  # ends on time, then the next session cannot connect
    watch.step()
    assert watch.started_from == ["200", "300", "300", "400"]
    assert watch.resumed == 2
