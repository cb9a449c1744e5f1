"""People pseudonymised in audit records: nobody readable without their key, and forgetting the
key leaves the record (and so the chain) unchanged but unreadable."""

from __future__ import annotations

import json

from agent_identity.keys.subjects import SubjectKey, key_field, new_subject_key, pseudonymise, reveal, seal, unseal
from agent_identity.keys.trail import Head, link, record_hash

RECORD = {
    "audit": "agentidentity.dev/v1",
    "action": "provisioned",
    "delegator": "user:alice@example.com",
    "delegationChain": ["user:alice@example.com", "agent:team/planner", "serviceaccount:ci/deployer"],
}


def keys_of(*principals: str) -> dict[str, SubjectKey]:
    return {principal: new_subject_key() for principal in principals}


def test_a_person_appears_only_as_a_subject_id_and_a_sealed_name() -> None:
    keys = keys_of("user:alice@example.com")
    hidden = pseudonymise(RECORD, keys.__getitem__)
    subject = keys["user:alice@example.com"]
    assert "alice" not in json.dumps(hidden)
    assert hidden["delegator"] == f"subject:{subject.id}"
    assert hidden["delegationChain"] == [f"subject:{subject.id}", "agent:team/planner", "serviceaccount:ci/deployer"]
    assert list(hidden["subjects"]) == [subject.id]
    assert reveal(hidden, {subject.id: subject}) == {**RECORD, "subjects": hidden["subjects"]}


def test_records_without_people_are_left_alone() -> None:
    record = {**RECORD, "delegator": "agent:team/planner", "delegationChain": ["agent:team/planner"]}
    assert pseudonymise(record, lambda principal: (_ for _ in ()).throw(AssertionError(principal))) == record


def test_forgetting_the_key_leaves_the_chain_verifying_and_the_person_unreadable() -> None:
    keys = keys_of("user:alice@example.com")
    linked, _ = link(pseudonymise(RECORD, keys.__getitem__), head=Head("a"), writer="w")
    subject = keys["user:alice@example.com"]
    assert reveal(linked, {subject.id: subject})["delegator"] == "user:alice@example.com"
    forgotten = reveal(linked, {})  # the key destroyed
    assert forgotten["delegator"] == f"subject:{subject.id} (forgotten)" and "alice" not in json.dumps(forgotten)
    assert record_hash(linked) == linked["hash"]  # the record as written: nothing to rewrite


def test_another_key_or_another_id_opens_nothing() -> None:
    alice, mallory = new_subject_key(), new_subject_key()
    sealed = seal("user:alice", alice)
    assert unseal(sealed, alice) == "user:alice"
    assert unseal(sealed, mallory) is None
    assert unseal(sealed, SubjectKey(id=mallory.id, key=alice.key)) is None  # the id is bound to the ciphertext
    record = pseudonymise(RECORD, {"user:alice@example.com": alice}.__getitem__)
    assert "alice" not in json.dumps(reveal(record, {alice.id: mallory}))


def test_the_key_store_names_nobody_and_the_key_never_shows_in_a_repr() -> None:
    subject = new_subject_key()
    assert "alice" not in key_field("user:alice") and key_field("user:alice") != key_field("user:alicf")
    assert subject.key.hex() not in repr(subject) and SubjectKey.from_json(subject.to_json()) == subject
