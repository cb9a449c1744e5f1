"""What a take-over looks at before (and while) it lists every identity (engine/informer.py):
identities not settled yet, found with a field selector, and every deadline due within AHEAD_S,
found from the ServiceAccounts' deadline labels. A label only says when to read its identity: the
identity's own status decides, a shard never takes another shard's identity, and a listing that
gets there first makes the hint moot."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from agent_identity.api.durations import format_timestamp
from agent_identity.engine import informer as informer_module
from agent_identity.engine.controller import Controller
from agent_identity.engine.informer import AHEAD_S, IdentityInformer, relist
from agent_identity.engine.workqueue import Lane
from agent_identity.kube.client import OwnWrites
from agent_identity.plan.children import ChildKind

from .factories import identity_body
from .fakeclock import SETTLE_TIMEOUT_S

NOW = datetime.now(UTC).replace(microsecond=0)  # deadlines an hour either side of it: never near "now" in a run


class SweepKube:
    """The reads the informer makes, answered from memory, each call recorded."""

    def __init__(self, accounts: list[dict[str, Any]], identities: dict[str, dict[str, Any]], shard: set[str]) -> None:
        self.accounts, self.identities, self.shard = accounts, identities, shard
        self.own_writes, self.on_identity_written = OwnWrites(), None
        self.selectors: list[str | None] = []
        self.down = False

    def children_metadata(self, kind: ChildKind, namespace: str | None, *, label_selector: str) -> Iterator[dict[str, Any]]:
        assert kind is ChildKind.SERVICE_ACCOUNT
        self.selectors.append(label_selector)
        yield from self.accounts  # as the API server filtered them

    def identity_pages(
        self,
        namespace: str,
        *,
        label_selector: str | None,
        field_selector: str | None,
        before_each: Callable[[], object] = lambda: None,
    ) -> Iterator[tuple[list[dict[str, Any]], str]]:
        if self.down:
            raise ConnectionError("the API server is unreachable")
        self.selectors.append(field_selector)
        in_shard = {name: body for name, body in self.identities.items() if label_selector is None or name in self.shard}
        if field_selector is None:  # the full listing, a page per identity, each asked for as Kube does
            for body in in_shard.values():
                before_each()
                yield [body], "50"
            return
        if field_selector.startswith("metadata.name="):
            named = in_shard.get(field_selector.removeprefix("metadata.name="))
            yield ([named] if named is not None else []), "50"
            return
        excluded = {part.removeprefix("status.phase!=") for part in field_selector.split(",")}
        yield [body for body in in_shard.values() if (body.get("status") or {}).get("phase", "") not in excluded], "50"


def account(identity: str, expires: datetime | str) -> dict[str, Any]:
    label = str(int(expires.timestamp())) if isinstance(expires, datetime) else expires
    labels = {"agentidentity.dev/identity": identity, "agentidentity.dev/expires": label}
    return {"name": f"aid-{identity}", "namespace": "support", "labels": labels}


def ready(name: str, expires: datetime) -> dict[str, Any]:
    status = {"phase": "Ready", "observedGeneration": 1, "expiresAt": format_timestamp(expires)}
    return identity_body(name, uid=f"u-{name}", status=status)


def informer_of(kube: SweepKube, *, shard: str | None = None) -> tuple[IdentityInformer, Controller]:
    reconciler: Any = SimpleNamespace(kube=kube)
    ctl = Controller(lambda lookup, profiles: reconciler, workers=1)
    informer = IdentityInformer(kube, ctl, "support", label_selector=shard, on_gap=lambda: None)  # type: ignore[arg-type]
    return informer, ctl


def test_deadlines_due_soon_are_expected_at_their_time_and_read_only_then() -> None:
    kube = SweepKube(
        [
            account("overdue", NOW - timedelta(hours=1)),
            account("soon", NOW + timedelta(seconds=30)),
            account("forged", "soon"),  # not a number: the API server's "<" would not select it either
        ],
        {"overdue": ready("overdue", NOW - timedelta(hours=1)), "soon": ready("soon", NOW + timedelta(seconds=30))},
        shard=set(),
    )
    informer, ctl = informer_of(kube)
    before = time.time()
    assert informer.sweep_first() == 2
    [selector] = [used for used in kube.selectors if used and used.startswith("app.kubernetes.io")]
    assert selector.startswith("app.kubernetes.io/managed-by=agent-identity-operator,agentidentity.dev/expires<")
    assert int(before + AHEAD_S) <= int(selector.rsplit("<", 1)[1]) <= int(time.time() + AHEAD_S)
    assert ctl.queue._due == {
        ("support", "overdue"): (NOW - timedelta(hours=1)).timestamp(),
        ("support", "soon"): (NOW + timedelta(seconds=30)).timestamp(),
    }
    assert not [used for used in kube.selectors if used and used.startswith("metadata.name=")]  # nothing read yet

    ctl._process(("support", "overdue"))  # its time came (at once: it is past) and nothing had listed it
    assert "metadata.name=overdue" in kube.selectors
    assert ctl.queue._queued[("support", "overdue")] is Lane.URGENT


def test_a_hint_never_decides_the_identity_status_does() -> None:
    """A user who may edit ServiceAccounts labels a lasting identity's account as overdue: it is
    read early and verified, and its status keeps it alive until its real deadline. (Verified as
    changed, not left to the background lane: a Role widened with the forged label must not wait
    for the listing either.)"""
    real = NOW + timedelta(hours=1)
    kube = SweepKube([account("relabelled", NOW - timedelta(hours=1))], {"relabelled": ready("relabelled", real)}, shard=set())
    informer, ctl = informer_of(kube)
    assert informer.sweep_first() == 1
    ctl._process(("support", "relabelled"))
    assert ctl.queue._queued[("support", "relabelled")] is Lane.ROUTINE
    assert ctl.queue._due[("support", "relabelled")] == real.timestamp()  # its status' deadline, not the label's


def test_a_listing_that_gets_there_first_makes_the_hint_moot() -> None:
    real = NOW + timedelta(hours=1)
    kube = SweepKube([account("listed", NOW + timedelta(seconds=30))], {"listed": ready("listed", real)}, shard=set())
    informer, ctl = informer_of(kube)
    assert informer.sweep_first() == 1
    informer.list_all(lambda: None)
    assert ctl.queue._due[("support", "listed")] == real.timestamp()  # the status' timer replaced the hint's
    assert informer.look_ahead() == 0  # cached: nothing to expect any more
    assert ctl._expected == {}


def test_a_read_that_fails_is_retried_and_the_identity_stays_expected() -> None:
    kube = SweepKube(
        [account("overdue", NOW - timedelta(hours=1))], {"overdue": ready("overdue", NOW - timedelta(hours=1))}, shard=set()
    )
    informer, ctl = informer_of(kube)
    informer.sweep_first()
    kube.down = True
    with pytest.raises(ConnectionError):
        ctl._process(("support", "overdue"))  # the work queue retries it with backoff
    kube.down = False
    ctl._process(("support", "overdue"))
    assert ctl.queue._queued[("support", "overdue")] is Lane.URGENT


def test_identities_not_settled_yet_are_queued_before_any_listing() -> None:
    """Created while no operator watched (the restart itself): waiting for the full listing would
    make them wait half a minute at 100,000 identities."""
    new = identity_body("new", uid="u-new")
    new.pop("status", None)
    kube = SweepKube([], {"new": new, "settled": ready("settled", NOW + timedelta(hours=1))}, shard=set())
    informer, ctl = informer_of(kube)
    assert informer.sweep_first() == 1
    assert ctl.queue._queued[("support", "new")] is Lane.ROUTINE
    assert ("support", "settled") not in ctl.queue._queued
    assert "status.phase!=Denied,status.phase!=Expired,status.phase!=Ready,status.phase!=Revoked" in kube.selectors


def test_a_shard_reads_only_its_own_identities() -> None:
    overdue = NOW - timedelta(hours=1)
    kube = SweepKube(
        [account("ours", overdue), account("theirs", overdue)],
        {name: ready(name, overdue) for name in ("ours", "theirs")},
        shard={"ours"},
    )
    informer, ctl = informer_of(kube, shard="shard=a")
    assert informer.sweep_first() == 2  # the label selector on accounts cannot tell shards apart
    for name in ("ours", "theirs"):
        ctl._process(("support", name))
    assert ("support", "ours") in ctl.queue._queued
    assert ("support", "theirs") not in ctl.queue._queued  # read with the shard's selector: not found
    assert ctl._expected == {}


def test_deadlines_are_looked_up_again_while_a_long_listing_lasts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every AHEAD_S / 2 between two pages, so a deadline is known AHEAD_S / 2 ahead however long
    the listing takes (here every page takes longer than that)."""
    monkeypatch.setattr(informer_module, "AHEAD_S", 0.0)
    lasting = {f"i{n}": ready(f"i{n}", NOW + timedelta(hours=1)) for n in range(3)}
    informer, _ = informer_of(SweepKube([], lasting, shard=set()))
    looks: list[int] = []
    informer.list_all(lambda: looks.append(1))
    assert len(looks) == 3  # after each page


def test_every_served_namespace_is_swept_before_any_is_listed() -> None:
    order: list[str] = []

    class Recording:
        def __init__(self, name: str) -> None:
            self.name = name

        def sweep_first(self) -> int:
            order.append(f"sweep {self.name}")
            return 0

        def list_all(self, between_pages: Any) -> None:
            order.append(f"list {self.name}")
            between_pages()

        def look_ahead(self) -> int:
            order.append(f"look ahead {self.name}")
            return 0

    relist([Recording("a"), Recording("b")])  # type: ignore[list-item]
    assert order == [
        "sweep a",
        "sweep b",
        "list a",
        "look ahead a",
        "look ahead b",
        "list b",
        "look ahead a",
        "look ahead b",
    ]


def test_the_listing_gives_way_to_the_deadlines_due_before_each_page(monkeypatch: pytest.MonkeyPatch) -> None:
    """A restart after downtime: the overdue burst gets the API server, and the workers, first."""
    lasting = {f"i{n}": ready(f"i{n}", NOW + timedelta(hours=1)) for n in range(3)}
    kube = SweepKube([], lasting, shard=set())
    informer, ctl = informer_of(kube)
    events: list[str] = []

    def wait_until_clear(lane: Lane, timeout: float) -> bool:
        events.append(f"give way to {lane.name} for {timeout:.0f}s")
        return True

    monkeypatch.setattr(ctl.queue, "wait_until_clear", wait_until_clear)
    monkeypatch.setattr(ctl, "observe", lambda event_type, body: events.append(f"list {body['metadata']['name']}"))
    informer.list_all(lambda: None)
    way = f"give way to URGENT for {informer_module.GIVE_WAY_S:.0f}s"
    # Each page gives way before it is asked for (the next one is asked for while the last is cached).
    ways = [n for n, event in enumerate(events) if event == way]
    assert len(ways) == 3 and all(ways[n] < events.index(f"list i{n}") for n in range(3))


def test_the_next_page_is_asked_for_while_the_last_is_cached_and_never_two_ahead(monkeypatch: pytest.MonkeyPatch) -> None:
    """The API server encodes a page while the operator caches the one before (a cold cache of
    100,000 identities is bound by the listing)."""
    lasting = {f"i{n}": ready(f"i{n}", NOW + timedelta(hours=1)) for n in range(3)}
    informer, ctl = informer_of(SweepKube([], lasting, shard=set()))
    asked = [threading.Event() for _ in lasting]  # page n asked for (the kube gives way first)
    calls = iter(asked)
    monkeypatch.setattr(ctl.queue, "wait_until_clear", lambda lane, timeout: next(calls).set() or True)
    seen: list[tuple[str, bool, bool]] = []

    def observe(event_type: str | None, body: dict[str, Any]) -> None:
        n = int(body["metadata"]["name"].removeprefix("i"))
        ahead = asked[n + 1].wait(SETTLE_TIMEOUT_S) if n + 1 < len(asked) else False
        seen.append((f"i{n}", ahead, n + 2 < len(asked) and asked[n + 2].is_set()))

    monkeypatch.setattr(ctl, "observe", observe)
    informer.list_all(lambda: None)
    assert seen == [("i0", True, False), ("i1", True, False), ("i2", False, False)]
