"""The audit trail's writer: every audit record of this shard is linked into the hash chain
(keys/trail.py) as it is written, and the head is signed and kept in the cluster.

- One writer per shard at a time. The head lives in the shard's field of the ConfigMap
  ``agent-identity-audit`` in the operator's namespace (never a served namespace, so no agent or ``edit`` holder there
  can touch it), and every write of it carries the resourceVersion it was read at. A writer
  claims the shard when it first writes (at start, and again after it takes the lease over): it
  reads the stored head, names itself in the field and continues from there. A former writer
  whose next checkpoint finds another writer named there has lost the shard: it stops signing
  and re-claims before it writes again, so two writers never sign diverging heads.
- Every ``--audit-checkpoint-interval`` with new records, and at shutdown, the head is signed
  with the assertions' signing key (when the operator has one: ``--signing-namespace``), stored,
  and then written as a checkpoint line into the trail.
- A record that cannot be linked yet (the claim cannot be read: the API server away) waits in
  memory, in order, and is linked by the next append or checkpoint.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import deque
from collections.abc import Callable
from datetime import datetime
from typing import Any

from agent_identity.keys.keystore import KeyStore, stored_body
from agent_identity.keys.trail import GENESIS, Head, checkpoint_line, link, sign_checkpoint
from agent_identity.kube.client import Kube, KubeError

log = logging.getLogger(__name__)

CONFIGMAP_NAME = "agent-identity-audit"  # one field per shard, named after it


class TrailWriter:
    def __init__(
        self,
        kube: Kube,
        *,
        namespace: str,
        shard: str,
        writer: str,
        keystore: KeyStore | None,
        clock: Callable[[], datetime],
        write: Callable[[dict[str, Any]], None],
        prepare: Callable[[dict[str, Any]], dict[str, Any]] = dict,
    ) -> None:
        self.kube, self.namespace, self.shard, self.writer = kube, namespace, shard, writer
        self.keystore, self.clock, self.write, self.prepare = keystore, clock, write, prepare
        self._lock = threading.Lock()  # appends in seq order
        self._store_lock = threading.Lock()  # one claim or checkpoint at a time
        self._head: Head | None = None  # None: not claimed (yet, or any more)
        self._pending: deque[dict[str, Any]] = deque()  # records waiting for a claim, oldest first
        self._signed = 0  # the seq last stored
        self._checkpoint: str | None = None  # the last checkpoint stored

    def append(self, record: dict[str, Any]) -> None:
        """Links ``record`` (prepared: its people pseudonymised) after the head and writes it. When
        the shard cannot be claimed or the record prepared (the API server away), the record waits,
        in order, for the next append or checkpoint; never written unlinked, never lost while the
        process lives, and never a failure of the reconcile that emitted it."""
        with self._lock:
            self._pending.append(record)
            self._flush()

    def _flush(self) -> None:
        try:
            while self._pending:
                head = self._head or self._claim()
                linked, head = link(self.prepare(self._pending[0]), head=head, writer=self.writer)
                self._pending.popleft()
                self._head = head
                self.write(linked)
        except (KubeError, RuntimeError, OSError) as error:
            if len(self._pending) == 1 or len(self._pending) % 1000 == 0:
                log.warning("audit trail of shard %s: %d records wait: %s", self.shard, len(self._pending), error)

    def release(self) -> None:
        """Forget the head: the next record re-reads the stored one (this replica took a lease)."""
        with self._lock:
            self._head = None

    def _read(self) -> tuple[dict[str, Any] | None, dict[str, Any]]:
        current = self.kube.get_stored("ConfigMap", self.namespace, CONFIGMAP_NAME)
        field = ((current or {}).get("data") or {}).get(self.shard)
        return current, json.loads(field) if field else {}

    def _write(self, current: dict[str, Any] | None, stored: dict[str, Any]) -> None:
        """Stores this shard's field at ``current``'s resourceVersion (KubeError 409 if it moved)."""
        data = {**((current or {}).get("data") or {}), self.shard: json.dumps(stored, sort_keys=True)}
        self.kube.store(stored_body(self.namespace, "ConfigMap", CONFIGMAP_NAME, current, data=data))

    def _claim(self) -> Head:
        with self._store_lock:
            for _ in range(10):
                current, stored = self._read()
                head = Head(self.shard, int(stored.get("seq", 0)), str(stored.get("head", GENESIS)))
                try:
                    self._write(current, {**stored, "seq": head.seq, "head": head.hash, "writer": self.writer})
                except KubeError as error:
                    if error.conflict:
                        continue
                    raise
                self._signed, self._checkpoint = head.seq, stored.get("checkpoint") or None
                log.info("audit trail of shard %s: %s resumes after seq %d", self.shard, self.writer, head.seq)
                return head
        raise RuntimeError(f"could not claim the audit trail of shard {self.shard}: {CONFIGMAP_NAME} keeps changing")

    def checkpoint(self) -> None:
        """Signs and stores the head if records came since the last checkpoint, then writes the
        checkpoint line. Finding another writer named in the stored field, this one lets go.
        Records waiting for a claim are written first."""
        with self._lock:
            self._flush()
            head = self._head
        with self._store_lock:
            if head is None or head.seq == self._signed:
                return
            token = (
                sign_checkpoint(
                    head, writer=self.writer, now=self.clock(), previous=self._checkpoint, key=self.keystore.signing_key()
                )
                if self.keystore
                else ""
            )
            mine = self._store(head, token)
            if mine:
                self._signed, self._checkpoint = head.seq, token or None
        if not mine:
            log.error("audit trail of shard %s: another writer claimed it; %s lets go", self.shard, self.writer)
            self.release()
        elif token:
            self.write(checkpoint_line(token))

    def _store(self, head: Head, token: str) -> bool:
        """Stores the signed head; False when the shard is another writer's now. A 409 from
        another shard's write is retried."""
        for _ in range(10):
            current, stored = self._read()
            if stored.get("writer") != self.writer:
                return False
            try:
                self._write(current, {"seq": head.seq, "head": head.hash, "writer": self.writer, "checkpoint": token})
            except KubeError as error:
                if error.conflict:
                    continue
                raise
            return True
        raise RuntimeError(f"could not store the audit checkpoint of shard {self.shard}: {CONFIGMAP_NAME} keeps changing")
