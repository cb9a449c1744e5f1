"""The audit trail's hash chain and checkpoints, tampered with as an insider who can edit the log
files would: every break is named, at the line where it is, and an untouched trail verifies."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from agent_identity.keys.signing import KeySet, new_key, sign
from agent_identity.keys.trail import (
    GENESIS,
    Head,
    Line,
    Report,
    canonical,
    checkpoint_line,
    link,
    record_hash,
    sign_checkpoint,
    verify_trail,
)

NOW = datetime(2026, 12, 7, 20, 0, tzinfo=UTC)
KEY = new_key(NOW)
JWKS = KeySet((KEY,)).jwks()
FOREIGN = new_key(NOW)  # the attacker's own key: not in the operator's JWKS


class Writer:
    """Writes a trail as the operator does: records linked, a checkpoint every ``every`` records."""

    def __init__(self, shard: str = "a", writer: str = "op-1", head: Head | None = None, previous: str | None = None) -> None:
        self.head, self.writer, self.previous = head or Head(shard), writer, previous
        self.lines: list[dict] = []

    def record(self, name: str, action: str = "provisioned", delegator: str = "user:alice") -> dict:
        record = {"audit": "agentidentity.dev/v1", "action": action, "namespace": "team", "name": name, "delegator": delegator}
        linked, self.head = link(record, head=self.head, writer=self.writer)
        self.lines.append(linked)
        return linked

    def checkpoint(self, key=KEY) -> str:
        token = sign_checkpoint(self.head, writer=self.writer, now=NOW, previous=self.previous, key=key)
        self.previous = token
        self.lines.append(checkpoint_line(token))
        return token


def trail(*, records: int = 10, every: int = 4) -> tuple[Writer, list[dict]]:
    writer = Writer()
    for n in range(1, records + 1):
        writer.record(f"agent-{n}")
        if n % every == 0:
            writer.checkpoint()
    return writer, writer.lines


def as_lines(records: list[dict], file: str = "audit.log") -> list[Line]:
    return [Line(f"{file}:{n}", json.dumps(record)) for n, record in enumerate(records, 1)]


def check(records: list[dict], **kwargs) -> Report:
    return verify_trail(as_lines(records), jwks=JWKS, **kwargs)


def first(report: Report) -> tuple[str, str, str]:
    assert report.problems, "tampering went unseen"
    problem = report.problems[0]
    return problem.kind, problem.where, problem.message


def test_the_hash_is_sha256_of_canonical_json_without_the_hash_field() -> None:
    linked, head = link({"b": 1, "a": "é"}, head=Head("a"), writer="w")
    assert canonical({"b": 1, "a": "é"}) == '{"a":"é","b":1}'.encode()
    assert linked["chain"] == {"shard": "a", "seq": 1, "prev": GENESIS, "writer": "w"}
    assert linked["hash"] == record_hash(linked) == head.hash
    following, _ = link({"c": 2}, head=head, writer="w")
    assert following["chain"]["prev"] == linked["hash"] and following["chain"]["seq"] == 2


def test_an_untouched_trail_verifies_and_names_its_unsigned_tail() -> None:
    _, records = trail(records=10, every=4)  # checkpoints after 4 and 8: 9 and 10 not signed yet
    report = check(records)
    assert report.ok, report.problems
    assert report.records == {"a": 10} and report.signed == {"a": 8}
    assert [note.kind for note in report.notes] == ["unsigned"]
    assert "records seq 9..10 come after the last checkpoint" in report.notes[0].message


def test_other_lines_of_a_log_pipeline_and_timestamp_prefixes_are_skipped() -> None:
    _, records = trail(records=4, every=4)
    lines = [Line("pod.log:1", "2026-12-07T20:00:00Z INFO agent_identity: started")]
    lines += [Line(f"pod.log:{n + 2}", "2026-12-07T20:00:01.5Z " + json.dumps(r)) for n, r in enumerate(records)]
    report = verify_trail(lines, jwks=JWKS)
    assert report.ok and report.records == {"a": 4} and report.signed == {"a": 4}


def test_one_field_of_one_record_edited_is_named() -> None:
    _, records = trail()
    records[5]["delegator"] = "user:mallory"  # seq 5 (records[4] is the first checkpoint line)
    assert records[5]["chain"]["seq"] == 5
    kind, where, message = first(check(records))
    assert (kind, where) == ("edited", "audit.log:6")
    assert "record seq 5 (provisioned team/agent-5) was edited" in message


def test_an_edit_with_its_hash_recomputed_breaks_the_next_link() -> None:
    _, records = trail()
    records[5]["delegator"] = "user:mallory"
    records[5]["hash"] = record_hash(records[5])
    kind, where, message = first(check(records))
    assert (kind, where) == ("forged", "audit.log:7") and "record seq 6" in message and "does not follow seq 5" in message


def test_a_whole_tail_rewritten_is_caught_by_the_next_checkpoint() -> None:
    """The insider edits seq 5 and recomputes every hash after it: each link holds, the signed head
    does not."""
    _, records = trail(records=8, every=4)
    head = Head("a", 4, records[3]["hash"])
    for index in range(5, 9):  # records seq 5..8 at lines 6..9
        record = {k: v for k, v in records[index].items() if k not in ("chain", "hash")}
        if record["name"] == "agent-5":
            record["delegator"] = "user:mallory"
        records[index], head = link(record, head=head, writer="op-1")
    kind, where, message = first(check(records))
    assert (kind, where) == ("edited", "audit.log:10")
    assert "signed another head: records after seq 4 up to 8 were rewritten" in message


def test_a_record_deleted_is_named_with_the_gap() -> None:
    _, records = trail()
    del records[6]  # seq 6
    kind, where, message = first(check(records))
    assert (kind, where) == ("removed", "audit.log:7") and "records seq 6..6 were removed" in message


def test_two_records_swapped_are_named_as_reordered() -> None:
    _, records = trail()
    records[5], records[6] = records[6], records[5]  # seq 6 now before seq 5
    kind, where, message = first(check(records))
    assert (kind, where) == ("reordered", "audit.log:6") and "record seq 6 comes before seq 5 (at audit.log:7)" in message


def test_a_record_copied_again_later_is_named() -> None:
    _, records = trail()
    records.append(dict(records[2]))
    kind, where, message = first(check(records))
    assert kind == "reordered" and where == f"audit.log:{len(records)}" and "record seq 3 comes again" in message


def test_a_record_inserted_is_forged() -> None:
    _, records = trail()
    forged = {"audit": "agentidentity.dev/v1", "action": "revoked", "namespace": "team", "name": "agent-5"}
    forged, _ = link(forged, head=Head("a", 5, "f" * 64), writer="op-1")  # the attacker cannot know seq 5's hash... guesses
    records.insert(7, forged)  # after seq 5 (line 6) and seq 6 (line 7): claims seq 6 again
    kind, _, _ = first(check(records))
    assert kind == "reordered"
    unchained = {"audit": "agentidentity.dev/v1", "action": "revoked", "namespace": "team", "name": "agent-9"}
    kind, where, message = first(check([*records[:3], unchained, *records[3:]]))
    assert (kind, where) == ("unchained", "audit.log:4") and "carries no chain fields" in message


def test_a_checkpoint_signed_with_a_key_not_in_the_jwks_is_forged() -> None:
    """The insider rewrites seq 5..8 and signs a checkpoint of their own over it."""
    writer, _ = trail(records=4, every=4)
    writer.record("agent-5", delegator="user:mallory")
    writer.checkpoint(key=FOREIGN)
    kind, where, message = first(check(writer.lines))
    assert (kind, where) == ("forged", "audit.log:7") and "not in the JWKS" in message


def test_a_checkpoint_with_a_forged_signature_under_our_kid_is_forged() -> None:
    writer, _ = trail(records=4, every=4)
    writer.record("agent-5")
    impostor = type(FOREIGN)(kid=KEY.kid, created_at=NOW, material=FOREIGN.material)  # our kid, their key
    writer.checkpoint(key=impostor)
    kind, _, message = first(check(writer.lines))
    assert kind == "forged" and "signature does not verify" in message


def test_an_assertion_signed_by_the_same_key_is_not_a_checkpoint() -> None:
    _, records = trail(records=4, every=4)
    assertion = sign({"seq": 99, "head": GENESIS, "shard": "a"}, KEY)  # typ JWT, not a checkpoint
    kind, _, message = first(check([*records, checkpoint_line(assertion)]))
    assert kind == "forged" and "not a checkpoint" in message


def test_an_old_checkpoint_replayed_later_is_named() -> None:
    _, records = trail(records=12, every=4)
    old = records[4]  # the checkpoint of seq 4
    kind, where, message = first(check([*records, old]))
    assert (kind, where) == ("replayed", f"audit.log:{len(records) + 1}")
    assert "checkpoint of seq 4 replayed after the checkpoint of seq 12" in message


def test_a_checkpoint_removed_between_two_others_is_named() -> None:
    _, records = trail(records=12, every=4)
    del records[9]  # the checkpoint of seq 8
    kind, _, message = first(check(records))
    assert kind == "removed" and "checkpoint of seq 12 does not follow the checkpoint of seq 4" in message


def test_records_cut_before_their_checkpoint_are_named() -> None:
    _, records = trail(records=8, every=4)
    del records[6:9]  # seq 6..8 cut, their checkpoint kept
    kind, _, message = first(check(records))
    assert kind == "removed" and "records seq 6..8, signed by the checkpoint" in message


def test_a_tail_cut_after_the_last_checkpoint_is_named_against_the_stored_checkpoint() -> None:
    writer, records = trail(records=10, every=4)
    stored = writer.checkpoint()  # the operator's latest checkpoint, kept in the cluster
    cut = records[:10]  # the insider cuts seq 9, 10 and the checkpoint line after them
    assert check(cut).ok  # alone, the cut looks like an unsigned tail...
    kind, where, message = first(check(cut, latest=[stored]))  # ...against the stored checkpoint it shows
    assert (kind, where) == ("truncated", "--checkpoint")
    assert "tail cut: the latest checkpoint signs seq 10 of shard a but the trail ends at seq 8" in message
    assert check(writer.lines, latest=[stored]).ok


def test_the_stored_checkpoint_must_be_the_latest_and_ours() -> None:
    writer, records = trail(records=12, every=4)
    old = records[4]["checkpoint"]
    kind, _, message = first(check(records, latest=[old]))
    assert kind == "replayed" and "older than the trail's last" in message
    foreign = sign_checkpoint(writer.head, writer="op-1", now=NOW, previous=None, key=FOREIGN)
    assert first(check(records, latest=[foreign]))[0] == "forged"


def test_a_new_writer_resuming_from_the_stored_checkpoint_continues_the_chain() -> None:
    """op-1 checkpoints seq 4, writes 5 and 6 and dies; op-2 resumes from the stored head (seq 4)."""
    writer, _ = trail(records=6, every=4)
    stored = Head("a", 4, writer.lines[3]["hash"])
    successor = Writer(writer="op-2", head=stored, previous=writer.lines[4]["checkpoint"])
    successor.record("agent-5b")
    successor.record("agent-6b")
    successor.checkpoint()
    report = check([*writer.lines, *successor.lines])
    assert report.ok, report.problems
    assert report.signed == {"a": 6} and report.records == {"a": 8}
    assert [note.kind for note in report.notes] == ["superseded"]
    assert "records 5..6 of writer op-1, never checkpointed" in report.notes[0].message


def test_a_deletion_dressed_up_as_a_takeover_is_not_accepted() -> None:
    """Records that a checkpoint signed cannot be superseded: a record that follows an earlier
    seq after them is a fork."""
    writer, _ = trail(records=8, every=4)  # seq 5..8 signed at 8
    rogue = Writer(writer="op-2", head=Head("a", 4, writer.lines[3]["hash"]))
    rogue.record("agent-5x")
    kind, _, message = first(check([*writer.lines, *rogue.lines]))
    assert kind == "reordered" and "record seq 5 comes again" in message


def test_shards_are_chains_of_their_own_in_one_file() -> None:
    a, b = Writer(shard="a"), Writer(shard="b", writer="op-b")
    mixed = []
    for n in range(3):
        mixed += [a.record(f"a{n}"), b.record(f"b{n}")]
    a.checkpoint()
    b.checkpoint()
    mixed += a.lines[-1:] + b.lines[-1:]
    report = check(mixed)
    assert report.ok and report.records == {"a": 3, "b": 3} and report.signed == {"a": 3, "b": 3}
    del mixed[2]  # a's seq 2
    kind, _, message = first(check(mixed))
    assert kind == "removed" and report.problems == [] and "seq 2..2" in message


def test_rotated_files_read_oldest_first_verify_as_one_trail() -> None:
    _, records = trail(records=10, every=4)
    lines = as_lines(records[:6], "audit.log.1") + as_lines(records[6:], "audit.log")
    assert verify_trail(lines, jwks=JWKS).ok
    report = verify_trail(as_lines(records[6:], "audit.log"), jwks=JWKS)  # the older file lost
    assert report.ok and [note.kind for note in report.notes][:1] == ["starts"]


@pytest.mark.parametrize("text", ["", "not json", '{"audit":"agentidentity.dev/v1"', "[1,2]"])
def test_garbage_lines_are_skipped_not_crashed_on(text: str) -> None:
    _, records = trail(records=4, every=4)
    lines = [*as_lines(records), Line("x:1", text)]
    assert verify_trail(lines, jwks=JWKS).ok
