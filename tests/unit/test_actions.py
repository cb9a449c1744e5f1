"""The join of an identity and the API server's audit events: by ServiceAccount uid only, in the
order received, 403s and requests after retirement marked."""

from __future__ import annotations

from typing import Any

import pytest

from agent_identity.sdk.actions import trail_of

SA_UID, OTHER_UID = "11111111-aaaa", "22222222-bbbb"
USERNAME = "system:serviceaccount:team:aid-worker"


def event(
    at: str, verb: str, code: int, *, uid: str = SA_UID, resource: str = "configmaps", stage: str = "ResponseComplete"
) -> dict[str, Any]:
    return {
        "kind": "Event",
        "stage": stage,
        "verb": verb,
        "requestURI": f"/api/v1/namespaces/team/{resource}",
        "requestReceivedTimestamp": at,
        "objectRef": {"resource": resource, "namespace": "team"},
        "responseStatus": {"code": code},
        "user": {
            "username": USERNAME,  # the same name for both: only the uid tells them apart
            "uid": uid,
            "extra": {"authentication.kubernetes.io/credential-id": ["JTI=abc"]},
        },
    }


def identity(**status: Any) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "team", "name": "worker"},
        "spec": {"task": "summarise"},
        "status": {"serviceAccountUID": SA_UID, "delegationChain": ["user:alice"], **status},
    }


def test_only_the_identitys_own_requests_in_order_with_403s_marked() -> None:
    events = [
        event("2026-12-07T20:00:02.000000Z", "list", 403, resource="secrets"),
        event("2026-12-07T20:00:01.000000Z", "list", 200),
        event("2026-12-07T20:00:01.500000Z", "list", 200, uid=OTHER_UID),  # a reused name, another uid
        event("2026-12-07T20:00:03.000000Z", "get", 200, stage="ResponseStarted"),  # a watch's first stage
    ]
    trail = trail_of(identity(), events)
    assert [(r.verb, r.target, r.code, r.forbidden) for r in trail.requests] == [
        ("list", "configmaps team", 200, False),
        ("list", "secrets team", 403, True),
    ]
    assert trail.forbidden == 1 and trail.after_retirement == 0 and trail.requests[0].credential == "JTI=abc"
    assert trail.delegator == "user:alice" and trail.task == "summarise"


def test_requests_after_retirement_stand_out_whatever_their_answer() -> None:
    retired = {"type": "Expired", "status": "True", "lastTransitionTime": "2026-12-07T20:00:05Z"}
    events = [event("2026-12-07T20:00:04.9Z", "list", 200), event("2026-12-07T20:00:06Z", "list", 403)]
    trail = trail_of(identity(conditions=[retired]), events)
    assert [r.after_retirement for r in trail.requests] == [False, True]
    assert trail.to_json()["afterRetirement"] == 1 and trail.retired_at == "2026-12-07T20:00:05+00:00"


def test_an_identity_never_provisioned_has_no_trail_to_join() -> None:
    with pytest.raises(ValueError, match="records no ServiceAccount uid"):
        trail_of({"metadata": {"namespace": "team", "name": "x"}, "status": {}}, [])
