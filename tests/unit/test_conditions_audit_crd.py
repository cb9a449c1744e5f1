import json
import logging
from datetime import timedelta
from pathlib import Path

import pytest

from agent_identity.api import crd
from agent_identity.api.conditions import Reason, set_condition
from agent_identity.ops import audit

from .factories import CREATED, identity

REPO = Path(__file__).resolve().parents[2]


def test_last_transition_time_moves_only_when_the_status_changes() -> None:
    first = set_condition(None, type_="Ready", status=False, reason=Reason.PROVISIONING, message="m", generation=1, now=CREATED)
    later = CREATED + timedelta(seconds=5)
    same = set_condition(first, type_="Ready", status=False, reason=Reason.API_ERROR, message="m2", generation=2, now=later)
    flipped = set_condition(same, type_="Ready", status=True, reason=Reason.PROVISIONED, message="ok", generation=2, now=later)
    assert same[0]["lastTransitionTime"] == "2026-11-28T12:00:00Z"
    assert same[0]["observedGeneration"] == 2 and same[0]["reason"] == "APIError"
    assert flipped[0]["lastTransitionTime"] == "2026-11-28T12:00:05Z"
    assert len(flipped) == 1


def test_set_condition_keeps_the_others() -> None:
    both = set_condition(
        set_condition(None, type_="Ready", status=True, reason=Reason.PROVISIONED, message="", generation=1, now=CREATED),
        type_="Expired",
        status=False,
        reason=Reason.NOT_EXPIRED,
        message="",
        generation=1,
        now=CREATED,
    )
    assert [c["type"] for c in both] == ["Expired", "Ready"]


def test_an_audit_line_says_who_what_for_whom_and_when(caplog: pytest.LogCaptureFixture) -> None:
    record = audit.audit_record(
        audit.Action.EXPIRED,
        identity(),
        now=CREATED,
        chain=("user:alice",),
        expires_at=CREATED + timedelta(seconds=90),
        reason="TTLElapsed",
        profile="standard",
        risk_level="low",
    )
    with caplog.at_level(logging.INFO, logger=audit.LOGGER_NAME):
        audit.emit(record)
    line = json.loads(caplog.records[0].getMessage())
    assert line == {
        "audit": "agentidentity.dev/v1",
        "time": "2026-11-28T12:00:00Z",
        "action": "expired",
        "reason": "TTLElapsed",
        "uid": "uid-crawler",
        "namespace": "support",
        "name": "crawler",
        "task": "collect incident notes",
        "delegator": "user:alice",
        "delegationChain": ["user:alice"],
        "createdAt": "2026-11-28T12:00:00Z",
        "expiresAt": "2026-11-28T12:01:30Z",
        "profile": "standard",
        "riskLevel": "low",
    }


@pytest.mark.parametrize("resource", crd.RESOURCES, ids=lambda r: r.kind)
def test_the_committed_crds_are_what_the_models_generate(resource: crd.Resource) -> None:
    committed = (REPO / "crds" / resource.file_name).read_text()
    assert committed == crd.render(resource), "crds/ is stale: run `make crds`"


def test_the_crd_schema_is_structural() -> None:
    def walk(node: object, path: str) -> None:
        if isinstance(node, dict):
            for forbidden in ("$ref", "anyOf", "title"):
                assert forbidden not in node, f"{forbidden} at {path}"
            # a map may say what its values are; never a bare true/false, never beside properties
            if "additionalProperties" in node:
                assert isinstance(node["additionalProperties"], dict) and "properties" not in node, path
            for key, value in node.items():
                walk(value, f"{path}.{key}")
        elif isinstance(node, list):
            for index, value in enumerate(node):
                walk(value, f"{path}[{index}]")

    for resource in crd.RESOURCES:
        walk(crd.openapi_schema(resource), "openAPIV3Schema")
