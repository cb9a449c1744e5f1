"""The reconciler's paths on an in-memory request layer (fakekube): a crash between two writes,
a foreign object in the way, an immutable field changed, a stripped ownerReference, retirement.
Milliseconds each; the real API server judges the same paths in tests/e2e and tests/chaos."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from agent_identity.engine.reconciler import Reconciler, Settings
from agent_identity.plan.children import ChildKind
from agent_identity.policy.facts import PolicySettings

from .factories import CREATED, identity_body
from .fakekube import FakeKube

NS, NAME = "support", "crawler"
KINDS = (ChildKind.SERVICE_ACCOUNT, ChildKind.ROLE, ChildKind.ROLE_BINDING, ChildKind.TOKEN_SECRET)


def setup(*, seconds: float = 10, kube: FakeKube | None = None) -> tuple[FakeKube, Reconciler]:
    """A reconciler whose clock reads ``seconds`` after creation, on a new fake (or on ``kube``)."""
    if kube is None:
        kube = FakeKube()
        kube.identities[(NS, NAME)] = identity_body(NAME, uid="uid-crawler")
    reconciler = Reconciler(
        kube,  # type: ignore[arg-type]
        settings=Settings(policy=PolicySettings(require_creator=False)),
        clock=lambda: CREATED + timedelta(seconds=seconds),
        lookup_identity=kube.get_identity,
        lookup_profile=kube.get_profile,
    )
    return kube, reconciler


def reconcile(kube: FakeKube, reconciler: Reconciler) -> Any:
    return reconciler.reconcile(kube.get_identity(NS, NAME) or {})


def names(name: str = NAME) -> dict[ChildKind, str]:
    return {kind: f"aid-{name}-token" if kind is ChildKind.TOKEN_SECRET else f"aid-{name}" for kind in KINDS}


def test_a_fresh_identity_becomes_four_children_and_a_ready_status_recording_their_uids() -> None:
    kube, reconciler = setup()
    reconcile(kube, reconciler)
    status = kube.identities[(NS, NAME)]["status"]
    assert status["phase"] == "Ready"
    assert status["childUIDs"] == {
        str(kind): kube.objects[(str(kind), NS, name)]["metadata"]["uid"] for kind, name in names().items()
    }
    assert [verb for verb, _ in kube.requests].count("GET") == 0  # a new identity creates without looking first


def test_a_crash_after_the_first_child_converges_with_no_duplicate() -> None:
    kube, reconciler = setup()
    reconcile(kube, reconciler)
    account_uid = kube.child(ChildKind.SERVICE_ACCOUNT, NS, "aid-crawler")["metadata"]["uid"]  # type: ignore[index]
    for kind, name in names().items():  # as if the operator died right after the ServiceAccount
        if kind is not ChildKind.SERVICE_ACCOUNT:
            del kube.objects[(str(kind), NS, name)]
    kube.identities[(NS, NAME)]["status"] = {}
    reconcile(kube, reconciler)  # the ServiceAccount's create meets a 409 and converges on it
    assert kube.child(ChildKind.SERVICE_ACCOUNT, NS, "aid-crawler")["metadata"]["uid"] == account_uid  # type: ignore[index]
    assert all(kube.child(kind, NS, name) is not None for kind, name in names().items())
    assert kube.identities[(NS, NAME)]["status"]["phase"] == "Ready"


def test_a_foreign_object_of_the_same_name_is_never_touched() -> None:
    kube, reconciler = setup()
    foreign = kube.put(ChildKind.ROLE, {"metadata": {"name": "aid-crawler", "namespace": NS}, "rules": []})
    reconcile(kube, reconciler)
    status = kube.identities[(NS, NAME)]["status"]
    assert status["phase"] == "Failed" and "NameConflict" in kube.events
    assert kube.child(ChildKind.ROLE, NS, "aid-crawler") == foreign


def test_an_immutable_field_changed_is_recreated_and_a_widened_role_narrowed() -> None:
    kube, reconciler = setup()
    reconcile(kube, reconciler)
    binding = kube.child(ChildKind.ROLE_BINDING, NS, "aid-crawler")
    role = kube.child(ChildKind.ROLE, NS, "aid-crawler")
    assert binding is not None and role is not None
    old_binding_uid, narrow = binding["metadata"]["uid"], role["rules"]
    binding["roleRef"] = {**binding["roleRef"], "name": "cluster-admin"}
    role["rules"] = [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]
    reconcile(kube, reconciler)
    repaired = kube.child(ChildKind.ROLE_BINDING, NS, "aid-crawler")
    assert repaired is not None and repaired["roleRef"]["name"] == "aid-crawler"
    assert repaired["metadata"]["uid"] != old_binding_uid  # roleRef is immutable: deleted and created again
    assert kube.child(ChildKind.ROLE, NS, "aid-crawler")["rules"] == narrow  # type: ignore[index]
    assert "Restored" in kube.events


def test_a_stripped_owner_reference_is_put_back_by_the_recorded_uid() -> None:
    kube, reconciler = setup()
    reconcile(kube, reconciler)
    account = kube.child(ChildKind.SERVICE_ACCOUNT, NS, "aid-crawler")
    assert account is not None
    uid = account["metadata"]["uid"]
    account["metadata"]["ownerReferences"] = []
    reconcile(kube, reconciler)
    restored = kube.child(ChildKind.SERVICE_ACCOUNT, NS, "aid-crawler")
    assert restored is not None and restored["metadata"]["uid"] == uid
    assert [ref["uid"] for ref in restored["metadata"]["ownerReferences"]] == ["uid-crawler"]
    assert kube.identities[(NS, NAME)]["status"]["phase"] == "Ready"


def test_retirement_deletes_the_service_account_first_then_the_rest() -> None:
    kube, reconciler = setup()
    reconcile(kube, reconciler)
    _, late = setup(seconds=91, kube=kube)  # past the 90 s TTL
    kube.requests.clear()
    first = reconcile(kube, late)
    assert first.follow_up and kube.requests == [("DELETE", "ServiceAccount/aid-crawler")]
    reconcile(kube, late)
    assert not any(kube.child(kind, NS, name) for kind, name in names().items())
    assert kube.identities[(NS, NAME)]["status"]["phase"] == "Expired" and "TTLElapsed" in kube.events
