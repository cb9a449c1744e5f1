"""Which lane of the work queue an AgentIdentity event puts its key in."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from agent_identity.api.durations import format_timestamp
from agent_identity.engine.controller import lane_for
from agent_identity.engine.workqueue import Lane


def body(phase: str | None, *, expires_in: timedelta = timedelta(hours=1), observed: int = 1) -> dict[str, Any]:
    status = {"phase": phase, "observedGeneration": observed, "expiresAt": format_timestamp(datetime.now(UTC) + expires_in)}
    return {"metadata": {"name": "a", "namespace": "n", "generation": 1}, "status": status if phase else {}}


def test_a_settled_identity_seen_in_a_listing_is_only_re_verified_in_the_background() -> None:
    assert lane_for(None, body("Ready")) is Lane.BACKGROUND
    assert lane_for(None, body("Expired", expires_in=timedelta(hours=-1))) is Lane.BACKGROUND
    assert lane_for(None, body("Denied")) is Lane.BACKGROUND


def test_changes_and_unsettled_identities_are_routine() -> None:
    assert lane_for("MODIFIED", body("Ready")) is Lane.ROUTINE  # something changed: look now
    assert lane_for(None, body("Pending")) is Lane.ROUTINE
    assert lane_for(None, body(None)) is Lane.ROUTINE  # never reconciled
    assert lane_for(None, body("Ready", observed=0)) is Lane.ROUTINE  # its spec moved since


def test_a_live_identity_past_its_deadline_goes_first() -> None:
    assert lane_for(None, body("Ready", expires_in=timedelta(seconds=-5))) is Lane.URGENT
    assert lane_for("MODIFIED", body("Pending", expires_in=timedelta(seconds=-5))) is Lane.URGENT
