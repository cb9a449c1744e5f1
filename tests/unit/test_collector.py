"""The operator's garbage-collector settings (app/main.py): a cold listing of many identities is
not spent walking the cache again and again."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from agent_identity.api.durations import format_timestamp
from agent_identity.app import main as entry
from agent_identity.engine.controller import Controller

from .factories import identity_body
from .test_controller_resync import controller

IDENTITIES, PAGE = 20_000, 2_000  # a page as the informer asks for them


def ready(number: int) -> dict[str, Any]:
    """A provisioned identity as a listing returns it, deadlines an hour away."""
    expires = format_timestamp(datetime.now(UTC) + timedelta(hours=1))
    status = {
        "phase": "Ready",
        "observedGeneration": 1,
        "expiresAt": expires,
        "issuedAt": format_timestamp(datetime.now(UTC)),
        "tokenExpiresAt": expires,
        "delegationChain": ["user:alice"],
        "childUIDs": {kind: f"uid-{kind}-{number}" for kind in ("ServiceAccount", "Role", "RoleBinding", "Secret")},
        "conditions": [
            {"type": "Ready", "status": "True", "reason": "Provisioned", "message": "valid", "lastTransitionTime": expires},
            {"type": "Expired", "status": "False", "reason": "NotExpired", "message": "within", "lastTransitionTime": expires},
        ],
    }
    body = identity_body(f"agent-{number}", uid=f"uid-{number}", status=status)
    body["metadata"]["resourceVersion"] = str(100 + number)
    return body


def full_collections_while_listing(ctl: Controller) -> int:
    """Full collections while ``ctl`` caches IDENTITIES listed in pages, each page parsed from
    its JSON as the request layer does, so the page's objects live while it is cached."""
    raw = [orjson.dumps({"items": [ready(n) for n in range(start, start + PAGE)]}) for start in range(0, IDENTITIES, PAGE)]

    def pages() -> Iterator[tuple[list[dict[str, Any]], str]]:
        for page in raw:
            yield orjson.loads(page)["items"], "1"

    full = 0

    def count(phase: str, info: dict[str, Any]) -> None:
        nonlocal full
        full += phase == "start" and info["generation"] == 2

    gc.collect()
    gc.callbacks.append(count)
    try:
        assert ctl.resync(pages(), namespace=None).listed == IDENTITIES
    finally:
        gc.callbacks.remove(count)
    return full


@pytest.fixture
def collector_settings() -> Iterator[None]:
    """Whatever a test does to the collector is undone after it."""
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("collector_settings")
def test_a_cold_listing_of_20000_identities_runs_at_most_one_full_collection() -> None:
    """With CPython's defaults the same listing runs a full collection every few pages (at
    100,000 identities: 71-83, 12-15 s of CPU), each walking every cached identity."""
    gc.set_threshold(700, 10, 10)  # CPython's defaults
    untuned = full_collections_while_listing(controller())
    entry._tune_collector()
    tuned = full_collections_while_listing(controller())
    assert untuned >= 3  # 4 measured here
    assert tuned <= 1


@pytest.mark.usefixtures("collector_settings")
def test_what_start_up_built_is_frozen_out_of_every_collection_and_young_ones_are_kept() -> None:
    gc.set_threshold(700, 10, 10)
    entry._tune_collector()
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold()[:2] == (700, 10)  # short-lived cycles still die young


@pytest.mark.usefixtures("collector_settings")
def test_the_operator_tunes_the_collector_before_it_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    """The entry point itself applies the settings, before kopf runs anything."""
    seen: list[tuple[int, int, int]] = []
    monkeypatch.setattr(entry, "_configure_logging", lambda config: None)
    monkeypatch.setattr(entry.handlers, "run", lambda config: seen.append(gc.get_threshold()))
    gc.set_threshold(700, 10, 10)
    entry.main(["--webhook-port", "9443"])
    assert seen == [(700, 10, entry.FULL_COLLECTION_AFTER)]
    assert gc.get_freeze_count() > 0
