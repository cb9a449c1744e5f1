"""The audit trail as evidence, pure: a hash chain of audit records and the signed checkpoints
over it, and the offline verification of a trail. No I/O: the writer (engine/trail.py) stores
the head and writes the lines; the verifier (``kubectl agent audit verify``) reads the files.

- Every record carries ``chain`` = {shard, seq, prev, writer} and ``hash``: the SHA-256 of its
  canonical JSON (keys sorted, no spaces, UTF-8) without ``hash``. ``prev`` is the hash of the
  record before it in the same shard (:data:`GENESIS` for the first), ``seq`` counts from 1.
  Changing one byte of a record, dropping, swapping or inserting one breaks a link.
- A checkpoint is a compact JWS (ES256, ``kid`` of a key in the operator's JWKS) over
  {shard, seq, head, writer, iat, previous}: ``head`` is the hash of record ``seq``, ``previous``
  the SHA-256 of the checkpoint before it, so checkpoints form a chain of their own and an old
  one replayed later is seen. A rewritten chain (every hash recomputed) no longer matches the
  head a checkpoint signed; a checkpoint signed with any other key does not verify.
- A writer that takes a shard over resumes from the stored checkpoint: its first record follows
  the checkpointed head. Records its predecessor wrote after that checkpoint (it stopped without
  signing them) are superseded: verification names them, and accepts the switch only when no
  checkpoint covers them.
- What verification cannot see: records cut after the last checkpoint in the files, unless it is
  given a later checkpoint (the one the operator keeps in the cluster); and anything done by
  someone holding the signing key.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import jwt

from agent_identity.keys.keyring import Key
from agent_identity.keys.signing import ALGORITHM, InvalidAssertion, jwks_key

AUDIT_VERSION = "agentidentity.dev/v1"
GENESIS = "0" * 64
CHECKPOINT_TYPE = "agentidentity-audit-checkpoint+jwt"


def canonical(value: Any) -> bytes:
    """The bytes hashed: JSON with sorted keys, no whitespace, UTF-8, no NaN."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def record_hash(record: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical({key: value for key, value in record.items() if key != "hash"})).hexdigest()


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Head:
    """The end of one shard's chain: the last record's seq and hash (0 and GENESIS when empty)."""

    shard: str
    seq: int = 0
    hash: str = GENESIS


def link(record: Mapping[str, Any], *, head: Head, writer: str) -> tuple[dict[str, Any], Head]:
    """``record`` appended after ``head``: with its chain fields and hash, and the new head."""
    linked = {**record, "chain": {"shard": head.shard, "seq": head.seq + 1, "prev": head.hash, "writer": writer}}
    linked["hash"] = record_hash(linked)
    return linked, Head(head.shard, head.seq + 1, linked["hash"])


def sign_checkpoint(head: Head, *, writer: str, now: datetime, previous: str | None, key: Key) -> str:
    """A checkpoint over ``head``; ``previous`` is the checkpoint before it (None for the first)."""
    claims = {
        "shard": head.shard,
        "seq": head.seq,
        "head": head.hash,
        "writer": writer,
        "iat": int(now.timestamp()),
        "previous": token_hash(previous) if previous else None,
    }
    return jwt.encode(claims, key.material, algorithm=ALGORITHM, headers={"kid": key.kid, "typ": CHECKPOINT_TYPE})


def checkpoint_line(token: str) -> dict[str, Any]:
    return {"audit": AUDIT_VERSION, "action": "checkpoint", "checkpoint": token}


class InvalidCheckpoint(Exception):
    """A checkpoint that must not be believed, and why."""


def open_checkpoint(token: str, *, jwks: dict[str, Any]) -> dict[str, Any]:
    """The claims of a checkpoint whose signature a key of ``jwks`` made."""
    try:
        header = jwt.get_unverified_header(token)
        public_key = jwks_key(header.get("kid"), jwks)
        claims = dict(jwt.decode(token, public_key, algorithms=[ALGORITHM], options={"verify_exp": False}))
    except InvalidAssertion as error:
        raise InvalidCheckpoint(f"forged: {error}") from None
    except jwt.InvalidSignatureError:
        raise InvalidCheckpoint("forged: its signature does not verify with the key it names") from None
    except jwt.PyJWTError as error:
        raise InvalidCheckpoint(f"not a checkpoint: {error}") from None
    if header.get("typ") != CHECKPOINT_TYPE or not isinstance(claims.get("seq"), int) or "head" not in claims:
        raise InvalidCheckpoint("not a checkpoint: a JWT of another kind (an assertion?) signed by the same key")
    return claims


# -- verification --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Line:
    """One line of a trail file, and where it was read."""

    where: str  # FILE:LINE
    text: str


@dataclass(frozen=True)
class Finding:
    """A break in the evidence (``problem``) or something a reader must know (a note)."""

    where: str
    shard: str | None
    kind: str  # edited, removed, reordered, forged, replayed, truncated, unchained; or a note's kind
    message: str


@dataclass
class Report:
    problems: list[Finding] = field(default_factory=list)
    notes: list[Finding] = field(default_factory=list)
    records: dict[str, int] = field(default_factory=dict)  # by shard: records verified
    signed: dict[str, int] = field(default_factory=dict)  # by shard: the last seq a checkpoint signed

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class _Shard:
    name: str
    hashes: dict[int, str] = field(default_factory=dict)  # seq -> hash, on the accepted branch
    writers: dict[int, str] = field(default_factory=dict)
    last_seq: int | None = None
    last_where: str = ""
    checkpoint: str | None = None  # the last accepted checkpoint token
    checkpoint_seq: int = 0
    signed_upto: int = 0
    broken: bool = False
    gap: tuple[int, int, int, int] | None = None  # missing seqs first..last, the seq after them, its problem


def _describe(record: Mapping[str, Any]) -> str:
    return f"{record.get('action')} {record.get('namespace')}/{record.get('name')}"


class _Verifier:
    def __init__(self, *, jwks: dict[str, Any]) -> None:
        self.jwks = jwks
        self.report = Report()
        self.shards: dict[str, _Shard] = {}

    def problem(self, shard: _Shard | None, where: str, kind: str, message: str) -> None:
        self.report.problems.append(Finding(where, shard.name if shard else None, kind, message))
        if shard is not None:
            shard.broken = True  # one break per shard: what follows it cannot be judged

    def note(self, shard: _Shard, where: str, kind: str, message: str) -> None:
        self.report.notes.append(Finding(where, shard.name, kind, message))

    def shard(self, name: str) -> _Shard:
        return self.shards.setdefault(name, _Shard(name))

    def run(self, lines: Iterable[tuple[Line, dict[str, Any]]]) -> Report:
        for line, record in lines:
            if "checkpoint" in record:
                self.on_checkpoint(line, record)
            else:
                self.on_record(line, record)
        return self.report

    def on_record(self, line: Line, record: dict[str, Any]) -> None:
        chain = record.get("chain")
        if not isinstance(chain, dict) or not isinstance(chain.get("seq"), int) or not isinstance(chain.get("shard"), str):
            self.problem(None, line.where, "unchained", f"{_describe(record)} carries no chain fields: forged, or not ours")
            return
        shard = self.shard(chain["shard"])
        if shard.broken:
            self.moved(shard, line, chain["seq"])
            return
        seq, prev = chain["seq"], chain.get("prev")
        if record.get("hash") != record_hash(record):
            self.problem(
                shard, line.where, "edited", f"record seq {seq} ({_describe(record)}) was edited: it no longer hashes to its hash"
            )
            return
        last = shard.last_seq
        if last is None:
            if seq != 1:
                self.note(
                    shard, line.where, "starts", f"the trail of shard {shard.name} starts at seq {seq}: earlier records not given"
                )
        elif seq == last + 1:
            if prev != shard.hashes[last]:
                self.problem(
                    shard,
                    line.where,
                    "forged",
                    f"record seq {seq} ({_describe(record)}) does not follow seq {last}: inserted or forged"
                    " (its prev is not the hash of the record before it)",
                )
                return
        elif seq > last + 1:
            self.problem(
                shard,
                line.where,
                "removed",
                f"records seq {last + 1}..{seq - 1} were removed (between {shard.last_where} and {line.where})",
            )
            shard.gap = (last + 1, seq - 1, seq, len(self.report.problems) - 1)  # unless one of them comes later
            return
        elif not self.resumed(shard, line, seq=seq, prev=prev, writer=str(chain.get("writer"))):
            return
        shard.hashes[seq], shard.writers[seq] = record["hash"], str(chain.get("writer"))
        shard.last_seq, shard.last_where = seq, line.where
        self.report.records[shard.name] = self.report.records.get(shard.name, 0) + 1

    def moved(self, shard: _Shard, line: Line, seq: object) -> None:
        """A record of a missing seq found after the gap: they were reordered, not removed."""
        if shard.gap is None or not isinstance(seq, int) or not shard.gap[0] <= seq <= shard.gap[1]:
            return
        _, _, after, index = shard.gap
        gap = self.report.problems[index]
        message = f"record seq {after} comes before seq {seq} (at {line.where}): reordered"
        self.report.problems[index] = Finding(gap.where, gap.shard, "reordered", message)
        shard.gap = None

    def resumed(self, shard: _Shard, line: Line, *, seq: int, prev: object, writer: str) -> bool:
        """A record whose seq was seen already: a new writer resuming from the checkpoint before
        it (accepted) or a record duplicated or moved back (a problem)."""
        assert shard.last_seq is not None
        follows = prev == (shard.hashes.get(seq - 1) if seq > 1 else GENESIS)
        takeover = follows and shard.checkpoint_seq == seq - 1 and shard.signed_upto < seq and writer != shard.writers.get(seq)
        if not takeover:
            self.problem(
                shard,
                line.where,
                "reordered",
                f"record seq {seq} comes again after seq {shard.last_seq}: duplicated or reordered",
            )
            return False
        self.note(
            shard,
            line.where,
            "superseded",
            f"writer {writer} resumed shard {shard.name} from the checkpoint of seq {seq - 1}: records"
            f" {seq}..{shard.last_seq} of writer {shard.writers.get(seq)}, never checkpointed (it stopped without"
            " signing them), are not part of the chain",
        )
        for stale in [n for n in shard.hashes if n >= seq]:
            del shard.hashes[stale]
            shard.writers.pop(stale, None)
        return True

    def on_checkpoint(self, line: Line, record: dict[str, Any]) -> None:
        try:
            claims = open_checkpoint(str(record["checkpoint"]), jwks=self.jwks)
        except InvalidCheckpoint as error:
            self.problem(None, line.where, "forged", f"checkpoint {error}")
            return
        shard = self.shard(str(claims.get("shard")))
        if not shard.broken:
            self.accept_checkpoint(shard, line.where, str(record["checkpoint"]), claims)

    def accept_checkpoint(self, shard: _Shard, where: str, token: str, claims: dict[str, Any]) -> bool:
        seq, head = claims["seq"], claims["head"]
        if shard.checkpoint is not None:
            if seq < shard.checkpoint_seq or token == shard.checkpoint:
                self.problem(
                    shard,
                    where,
                    "replayed",
                    f"checkpoint of seq {seq} replayed after the checkpoint of seq {shard.checkpoint_seq}",
                )
                return False
            if claims.get("previous") != token_hash(shard.checkpoint):
                self.problem(
                    shard,
                    where,
                    "removed",
                    f"checkpoint of seq {seq} does not follow the checkpoint of seq {shard.checkpoint_seq}:"
                    " a checkpoint between them was removed, or this one replayed",
                )
                return False
        last = shard.last_seq or 0
        if seq > last:
            self.problem(
                shard,
                where,
                "removed",
                f"records seq {last + 1}..{seq}, signed by the checkpoint at {where}, are missing",
            )
            return False
        if seq in shard.hashes and shard.hashes[seq] != head:
            self.problem(
                shard,
                where,
                "edited",
                f"the checkpoint of seq {seq} signed another head: records after seq {shard.signed_upto} up to {seq}"
                " were rewritten (hashes recomputed)",
            )
            return False
        shard.checkpoint, shard.checkpoint_seq, shard.signed_upto = token, seq, max(shard.signed_upto, seq)
        for signed in [n for n in shard.hashes if n < seq]:  # what a checkpoint signed is settled
            del shard.hashes[signed]
            shard.writers.pop(signed, None)
        return True

    def finish(self, latest: Iterable[str]) -> Report:
        for token in latest:
            self.against_latest(token)
        for shard in self.shards.values():
            self.report.signed[shard.name] = shard.signed_upto
            if shard.broken or shard.last_seq is None:
                continue
            if shard.checkpoint is None:
                self.note(
                    shard, shard.last_where, "unsigned", f"shard {shard.name}: no checkpoint, nothing in this trail is signed"
                )
            elif shard.last_seq > shard.signed_upto:
                self.note(
                    shard,
                    shard.last_where,
                    "unsigned",
                    f"shard {shard.name}: records seq {shard.signed_upto + 1}..{shard.last_seq} come after the last checkpoint:"
                    " not signed yet (a cut of them shows only against a later checkpoint: --checkpoint)",
                )
        return self.report

    def against_latest(self, token: str) -> None:
        """The checkpoint kept in the cluster: the trail must reach it and agree with it."""
        try:
            claims = open_checkpoint(token, jwks=self.jwks)
        except InvalidCheckpoint as error:
            self.problem(None, "--checkpoint", "forged", f"checkpoint {error}")
            return
        shard = self.shard(str(claims.get("shard")))
        if shard.broken or token == shard.checkpoint:
            return
        seq, last = claims["seq"], shard.last_seq or 0
        if seq > last:
            self.problem(
                shard,
                "--checkpoint",
                "truncated",
                f"tail cut: the latest checkpoint signs seq {seq} of shard {shard.name} but the trail ends at seq {last}"
                f" ({shard.last_where or 'no record'}): records {last + 1}..{seq} were removed",
            )
        elif seq < shard.checkpoint_seq:
            self.problem(
                shard,
                "--checkpoint",
                "replayed",
                f"the checkpoint given (seq {seq}) is older than the trail's last (seq {shard.checkpoint_seq}): not the latest",
            )
        elif shard.hashes.get(seq) != claims["head"]:
            self.problem(
                shard, "--checkpoint", "edited", f"the latest checkpoint signed another head for seq {seq}: records rewritten"
            )
        else:
            shard.signed_upto = max(shard.signed_upto, seq)


def parse_lines(lines: Iterable[Line]) -> Iterator[tuple[Line, dict[str, Any]]]:
    """The audit lines among ``lines`` (a log pipeline's file holds other lines too), one at a
    time. A line may carry a prefix before its JSON (a timestamp)."""
    for line in lines:
        start = line.text.find('{"audit"')
        try:
            record = json.loads(line.text[start:]) if start >= 0 else None
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("audit") == AUDIT_VERSION:
            yield line, record


def verify_trail(lines: Iterable[Line], *, jwks: dict[str, Any], latest: Iterable[str] = ()) -> Report:
    """Verify a trail read in order (files oldest first), streaming: what it keeps is the records
    since each shard's last checkpoint. The report's first problem is the first break: a record
    edited, removed, reordered or forged, a checkpoint forged or replayed, or (given the
    ``latest`` checkpoint kept in the cluster) a tail cut."""
    verifier = _Verifier(jwks=jwks)
    verifier.run(parse_lines(lines))
    return verifier.finish(latest)
