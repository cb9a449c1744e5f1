"""The request layer's paging: a list is asked for page by page with continue tokens, and the
caller's ``before_each`` runs before each page is asked for, never once the last has come (the
listing's give-way would otherwise hold the end of a listing up for nothing)."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client

from agent_identity.kube.client import Kube


def test_before_each_runs_before_every_page_asked_for_and_not_after_the_last(monkeypatch: pytest.MonkeyPatch) -> None:
    kube = Kube(client.Configuration(host="https://127.0.0.1:1"))
    events: list[str] = []
    tokens = {None: "t1", "t1": "t2", "t2": ""}  # three pages; the last has no continue token

    def request(method: str, path: str, *, query: dict[str, str], accept: str) -> dict[str, Any]:
        asked = query.get("continue")
        events.append(f"{method} page after {asked}")
        return {"metadata": {"resourceVersion": "7", "continue": tokens[asked]}, "items": [{"metadata": {"name": str(asked)}}]}

    monkeypatch.setattr(kube, "_request", request)
    pages = kube.identity_pages("support", before_each=lambda: events.append("before"))
    names = [item["metadata"]["name"] for page, _ in pages for item in page]
    assert names == ["None", "t1", "t2"]
    assert events == ["before", "GET page after None", "before", "GET page after t1", "before", "GET page after t2"]
