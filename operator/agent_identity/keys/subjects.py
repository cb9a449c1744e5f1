"""People in the audit trail, pseudonymised so they can be forgotten without breaking the chain.
Pure: the keys' storage is the caller's (engine/subjects.py).

- A human principal (``user:NAME``) never appears in a record. Each person has a random subject
  id and a 256-bit key of their own; a record names ``subject:<id>`` wherever the person was
  (delegator, delegation chain) and carries, under ``subjects``, the person's principal encrypted
  with their key (AES-256-GCM, the id as associated data). Agents and ServiceAccounts are not
  persons and stay readable.
- The keys are kept by :func:`key_field` of the principal (a SHA-256, so the key store names no
  one either). Destroying a person's key (crypto-shredding, ``kubectl agent audit forget``) leaves
  every record byte for byte as it was, so the hash chain still verifies, but nobody can read
  who ``subject:<id>`` was any more. The id is random, not derived from the name: it cannot be
  recomputed from a guess.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

PERSON_PREFIX = "user:"
SUBJECT_PREFIX = "subject:"
NONCE_BYTES = 12


@dataclass(frozen=True)
class SubjectKey:
    id: str
    key: bytes  # never in a repr or a log line

    def __repr__(self) -> str:
        return f"SubjectKey(id={self.id!r})"

    def to_json(self) -> str:
        return json.dumps({"id": self.id, "key": base64.b64encode(self.key).decode()})

    @classmethod
    def from_json(cls, text: str) -> SubjectKey:
        item = json.loads(text)
        return cls(id=str(item["id"]), key=base64.b64decode(item["key"]))


def new_subject_key() -> SubjectKey:
    return SubjectKey(id=secrets.token_hex(8), key=AESGCM.generate_key(bit_length=256))


def is_person(principal: object) -> bool:
    return isinstance(principal, str) and principal.startswith(PERSON_PREFIX)


def key_field(principal: str) -> str:
    """Where a person's key is kept: a Secret data key ([-._a-zA-Z0-9]) that names nobody."""
    return "s-" + hashlib.sha256(principal.encode()).hexdigest()[:40]


def seal(principal: str, subject: SubjectKey) -> str:
    nonce = os.urandom(NONCE_BYTES)
    return base64.b64encode(nonce + AESGCM(subject.key).encrypt(nonce, principal.encode(), subject.id.encode())).decode()


def unseal(sealed: str, subject: SubjectKey) -> str | None:
    """The principal, or None when ``subject``'s key did not seal it."""
    raw = base64.b64decode(sealed)
    try:
        return AESGCM(subject.key).decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], subject.id.encode()).decode()
    except InvalidTag:
        return None


def pseudonymise(record: Mapping[str, Any], subject_of: Callable[[str], SubjectKey]) -> dict[str, Any]:
    """``record`` with every person replaced by their subject id, and their sealed principal."""
    sealed: dict[str, str] = {}

    def hide(principal: Any) -> Any:
        if not is_person(principal):
            return principal
        subject = subject_of(principal)
        sealed.setdefault(subject.id, seal(principal, subject))
        return SUBJECT_PREFIX + subject.id

    hidden = dict(record)
    if "delegator" in hidden:
        hidden["delegator"] = hide(hidden["delegator"])
    if isinstance(hidden.get("delegationChain"), list):
        hidden["delegationChain"] = [hide(entry) for entry in hidden["delegationChain"]]
    if sealed:
        hidden["subjects"] = sealed
    return hidden


def reveal(record: Mapping[str, Any], keys: Mapping[str, SubjectKey]) -> dict[str, Any]:
    """A copy of ``record`` for reading, with each subject a kept key opens written out and each
    forgotten one as ``subject:<id> (forgotten)``. The chain's hash is of the record as written."""
    names: dict[str, str] = {}
    for subject_id, sealed in (record.get("subjects") or {}).items():
        key = keys.get(subject_id)
        principal = unseal(sealed, key) if key else None
        names[SUBJECT_PREFIX + subject_id] = principal or f"{SUBJECT_PREFIX}{subject_id} (forgotten)"
    shown = dict(record)
    if "delegator" in shown:
        shown["delegator"] = names.get(shown["delegator"], shown["delegator"])
    if isinstance(shown.get("delegationChain"), list):
        shown["delegationChain"] = [names.get(entry, entry) for entry in shown["delegationChain"]]
    return shown


SECRET_NAME = "agent-identity-audit-subjects"  # in the operator's namespace: one data field per person
