"""A creator seal vouches for one object, once: nonces, the ledger's claim and the uid binding."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from agent_identity.engine.seal_ledger import CLAIMED_FOR, CLAIMED_UID, SealLedger
from agent_identity.keys.keyring import KeyRing, random_material, rotate
from agent_identity.keys.seal import (
    MAX_SKEW,
    already_vouched,
    binding,
    bound,
    check,
    ledger_name,
    may_forget,
    seal,
    window_closed,
)
from agent_identity.kube.client import KubeError
from agent_identity.plan.children import ANNOTATION_CREATOR, ANNOTATION_SEAL
from agent_identity.plan.decisions import parse_identity

from .factories import CREATED

SPEC: dict[str, Any] = {"task": "t", "ttl": "1m"}
ALICE = '{"username":"alice"}'
SEALED: dict[str, Any] = {"namespace": "support", "name": "crawler", "spec": SPEC, "creator": ALICE}


def ring() -> KeyRing:
    return rotate(None, now=CREATED, period=timedelta(days=1), publish_ahead=timedelta(0), new_material=random_material)


def sealed(keys: KeyRing, nonce: str = "n1") -> str:
    return seal(keys.keys[0], **SEALED, now=CREATED, nonce=nonce)


def test_no_two_admissions_make_the_same_seal() -> None:
    keys = ring()
    first, second = sealed(keys, "n1"), sealed(keys, "n2")
    assert first != second and ledger_name(first) != ledger_name(second)
    assert check(keys, first, **SEALED, created_at=CREATED) is None
    assert check(keys, second, **SEALED, created_at=CREATED) is None
    forged = first.replace(".n1.", ".n2.")  # the nonce is covered by the MAC
    assert "does not match" in (check(keys, forged, **SEALED, created_at=CREATED) or "")
    assert "malformed" in (check(keys, first.replace(".n1.", ".."), **SEALED, created_at=CREATED) or "")


def test_a_binding_holds_for_the_uid_it_was_made_for_only() -> None:
    keys = ring()
    value = sealed(keys)
    made = binding(keys, value, "uid-1")
    assert made is not None and bound(keys, value, "uid-1", made)
    assert not bound(keys, value, "uid-2", made)  # copied onto the re-created object
    assert not bound(keys, sealed(keys, "n2"), "uid-1", made)  # or onto another seal
    assert not bound(keys, value, "uid-1", None) and not bound(keys, value, "", made)
    assert not bound(ring(), value, "uid-1", made)  # a key we do not hold


def test_the_ledger_forgets_a_claim_only_once_no_second_object_can_use_it() -> None:
    value = sealed(ring())
    entry, closed = ledger_name(value), CREATED + MAX_SKEW + timedelta(minutes=10)
    assert not window_closed(CREATED, CREATED + MAX_SKEW)  # the clocks may disagree: kept a while longer
    assert window_closed(CREATED, closed)

    def forget(now: Any, current: tuple[str, str | None] | None) -> bool:
        return may_forget(entry=entry, claimed_uid="uid-1", sealed_at=CREATED, now=now, current=current)

    assert not forget(CREATED + timedelta(minutes=1), None)
    assert forget(closed, None)
    assert forget(closed, ("uid-1", value))  # the claimant: its binding vouches from now on
    assert forget(closed, ("uid-9", sealed(ring(), "other")))  # another admission's object
    assert not forget(closed, ("uid-2", value))  # a replay still there would claim afresh


class LedgerKube:
    """The API of the ledger's Leases, in memory."""

    def __init__(self) -> None:
        self.leases: dict[str, dict[str, Any]] = {}
        self.identities: dict[tuple[str, str], dict[str, Any]] = {}
        self.creates = 0

    def may_write(self) -> bool:
        return True

    def create_stored(self, body: dict[str, Any]) -> dict[str, Any]:
        self.creates += 1
        name = body["metadata"]["name"]
        if name in self.leases:
            raise KubeError(method="POST", path=name, status=409, reason="AlreadyExists", message="exists")
        self.leases[name] = {**body, "metadata": {**body["metadata"], "uid": f"lease-{name}"}}
        return self.leases[name]

    def get_stored(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self.leases.get(name)

    def stored_metadata(self, kind: str, namespace: str, *, label_selector: str) -> list[dict[str, Any]]:
        return [lease["metadata"] for lease in self.leases.values()]

    def delete_stored(self, kind: str, namespace: str, name: str, *, uid: str) -> bool:
        return self.leases.pop(name, None) is not None

    def get_identity(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.identities.get((namespace, name))


class Binder:
    def __init__(self, keys: KeyRing) -> None:
        self.keys = keys

    def binding(self, value: str, uid: str) -> str | None:
        return binding(self.keys, value, uid)

    def bound(self, value: str, uid: str, claimed: str | None) -> bool:
        return bound(self.keys, value, uid, claimed)


def identity_body(value: str, uid: str, status: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "agentidentity.dev/v1alpha1",
        "kind": "AgentIdentity",
        "metadata": {
            "name": "crawler",
            "namespace": "support",
            "uid": uid,
            "creationTimestamp": "2026-11-28T12:00:00Z",
            "annotations": {ANNOTATION_CREATOR: ALICE, ANNOTATION_SEAL: value},
        },
        "spec": {"task": "t", "ttl": "1m", "scopes": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}]},
        "status": status or {},
    }


def test_a_seal_claimed_for_one_uid_refuses_the_next_and_survives_a_crash_and_a_sweep() -> None:
    keys = ring()
    value = sealed(keys)
    kube, now = LedgerKube(), [CREATED]
    ledger = SealLedger(kube, Binder(keys), namespace="op", clock=lambda: now[0])  # type: ignore[arg-type]

    def identity(uid: str, status: dict[str, Any] | None = None) -> Any:
        parsed = parse_identity(identity_body(value, uid, status))
        assert not isinstance(parsed, str), parsed
        return parsed

    assert ledger.claim(identity("uid-1")) is None and kube.creates == 1
    assert ledger.claim(identity("uid-1")) is None  # a crash before the status: its own claim
    lease = kube.leases[ledger_name(value)]["metadata"]["annotations"]
    assert lease[CLAIMED_FOR] == "support/crawler" and lease[CLAIMED_UID] == "uid-1"
    replay = ledger.claim(identity("uid-2"))
    assert replay == already_vouched("support", "crawler", "uid-1")
    assert replay is not None and "already vouched for AgentIdentity support/crawler uid uid-1" in replay
    copied = {"sealBinding": ledger.binding(identity("uid-1"))}
    assert ledger.claim(identity("uid-2", copied)) == replay  # the first one's binding is worthless
    creates = kube.creates
    assert ledger.claim(identity("uid-1", copied)) is None and kube.creates == creates  # bound: no request

    now[0] = CREATED + MAX_SKEW + timedelta(minutes=10)
    kube.identities[("support", "crawler")] = identity_body(value, "uid-2")
    assert ledger.sweep() == 0  # the replay is still there: it must never find the ledger empty
    assert ledger.claim(identity("uid-2")) == replay
    kube.identities[("support", "crawler")] = identity_body(value, "uid-1")
    assert ledger.sweep() == 1 and not kube.leases
    # past the window only the object there can carry the seal: it needs no new claim
    assert ledger.claim(identity("uid-1")) is None and not kube.leases
