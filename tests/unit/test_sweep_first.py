"""What a take-over looks at before its listing of every identity (engine/informer.py): identities
whose ServiceAccount's deadline label has passed, and identities not settled yet, each found with a
listing the API server filters. The label only orders the work, and a shard never takes another
shard's identity."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

from agent_identity.api.durations import format_timestamp
from agent_identity.engine.controller import Controller
from agent_identity.engine.informer import IdentityInformer
from agent_identity.engine.workqueue import Lane
from agent_identity.kube.client import OwnWrites
from agent_identity.plan.children import ChildKind

from .factories import identity_body

NOW = datetime.now(UTC).replace(microsecond=0)  # deadlines an hour either side of it: never near "now" in a run


class SweepKube:
    """The two reads the sweep makes, answered from memory, each call recorded."""

    def __init__(self, accounts: list[dict[str, Any]], identities: dict[str, dict[str, Any]], shard: set[str]) -> None:
        self.accounts, self.identities, self.shard = accounts, identities, shard
        self.own_writes, self.on_identity_written = OwnWrites(), None
        self.selectors: list[str] = []

    def children_metadata(self, kind: ChildKind, namespace: str | None, *, label_selector: str) -> Iterator[dict[str, Any]]:
        assert kind is ChildKind.SERVICE_ACCOUNT
        self.selectors.append(label_selector)
        yield from self.accounts  # as the API server filtered them

    def identity_pages(
        self, namespace: str, *, label_selector: str | None, field_selector: str
    ) -> Iterator[tuple[list[dict[str, Any]], str]]:
        self.selectors.append(field_selector)
        in_shard = {name: body for name, body in self.identities.items() if label_selector is None or name in self.shard}
        if field_selector.startswith("metadata.name="):
            body = in_shard.get(field_selector.removeprefix("metadata.name="))
            yield ([body] if body is not None else []), "50"
            return
        excluded = {part.removeprefix("status.phase!=") for part in field_selector.split(",")}
        yield [body for body in in_shard.values() if (body.get("status") or {}).get("phase", "") not in excluded], "50"


def account(identity: str) -> dict[str, Any]:
    return {"name": f"aid-{identity}", "namespace": "support", "labels": {"agentidentity.dev/identity": identity}}


def ready(name: str, expires: datetime) -> dict[str, Any]:
    status = {"phase": "Ready", "observedGeneration": 1, "expiresAt": format_timestamp(expires)}
    return identity_body(name, uid=f"u-{name}", status=status)


def sweep(kube: SweepKube, *, shard: str | None = None) -> tuple[int, Controller]:
    reconciler: Any = SimpleNamespace(kube=kube)
    ctl = Controller(lambda lookup, profiles: reconciler, workers=1)
    informer = IdentityInformer(kube, ctl, "support", label_selector=shard, on_gap=lambda: None)  # type: ignore[arg-type]
    return informer.sweep_first(), ctl


def test_identities_past_their_deadline_are_queued_urgently_before_any_listing() -> None:
    kube = SweepKube(
        [account("overdue"), account("relabelled"), account("deleted")],
        {"overdue": ready("overdue", NOW - timedelta(hours=1)), "relabelled": ready("relabelled", NOW + timedelta(hours=1))},
        shard=set(),
    )
    before = int(time.time())
    found, ctl = sweep(kube)
    after = int(time.time())
    assert found == 2
    [selector] = [used for used in kube.selectors if used.startswith("app.kubernetes.io")]
    assert selector.startswith("app.kubernetes.io/managed-by=agent-identity-operator,agentidentity.dev/expires<")
    assert before <= int(selector.rsplit("<", 1)[1]) <= after  # "now", when the sweep ran
    assert ctl.queue._queued[("support", "overdue")] is Lane.URGENT
    # Its label said overdue, its status says otherwise: the status decides (verified in the background).
    assert ctl.queue._queued[("support", "relabelled")] is Lane.BACKGROUND
    assert ("support", "deleted") not in ctl.queue._queued
    assert "status.phase!=Denied,status.phase!=Expired,status.phase!=Ready,status.phase!=Revoked" in kube.selectors


def test_identities_not_settled_yet_are_queued_before_any_listing() -> None:
    """Created while no operator watched (the restart itself): waiting for the full listing would
    make them wait half a minute at 100,000 identities."""
    new = identity_body("new", uid="u-new")
    new.pop("status", None)
    kube = SweepKube([], {"new": new, "settled": ready("settled", NOW + timedelta(hours=1))}, shard=set())
    found, ctl = sweep(kube)
    assert found == 1
    assert ctl.queue._queued[("support", "new")] is Lane.ROUTINE
    assert ("support", "settled") not in ctl.queue._queued


def test_a_shard_sweeps_only_its_own_identities() -> None:
    kube = SweepKube(
        [account("ours"), account("theirs")],
        {name: ready(name, NOW - timedelta(hours=1)) for name in ("ours", "theirs")},
        shard={"ours"},
    )
    found, ctl = sweep(kube, shard="shard=a")
    assert found == 1  # overdue, so not settled: found once by name
    assert ("support", "ours") in ctl.queue._queued
    assert ("support", "theirs") not in ctl.queue._queued
