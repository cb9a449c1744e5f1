"""The people's keys of the audit trail (keys/subjects.py), in the Secret
``agent-identity-audit-subjects`` of the operator's namespace: one data field per person, named
by a hash of the principal, holding their subject id and key.

A key is created the first time a person appears, with a resourceVersion precondition (two
replicas never give one person two keys: the loser of the write re-reads and takes the winner's).
The keys are read again every ``refresh_s``: a person forgotten (their field deleted) is, at the
latest that long after, no longer sealed with the destroyed key; if they appear again they get a
new id and key, unlinkable to the forgotten ones.
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable
from typing import Any

from agent_identity.keys.keystore import stored_body
from agent_identity.keys.subjects import SECRET_NAME, SubjectKey, key_field, new_subject_key
from agent_identity.kube.client import Kube, KubeError


class SubjectKeys:
    def __init__(
        self, kube: Kube, *, namespace: str, refresh_s: float = 10.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.kube, self.namespace, self.refresh_s, self.clock = kube, namespace, refresh_s, clock
        self._lock = threading.Lock()
        self._keys: dict[str, SubjectKey] = {}
        self._read_at: float | None = None

    def __call__(self, principal: str) -> SubjectKey:
        """The key of ``principal``, created if they have none."""
        field = key_field(principal)
        with self._lock:
            if self._read_at is None or self.clock() - self._read_at >= self.refresh_s:
                try:
                    self._load(self.kube.get_stored("Secret", self.namespace, SECRET_NAME))
                except KubeError:
                    if field not in self._keys:  # a known person is sealed with the key read last
                        raise
            return self._keys.get(field) or self._add(field)

    def _load(self, secret: dict[str, Any] | None) -> None:
        data = (secret or {}).get("data") or {}
        self._keys = {field: SubjectKey.from_json(base64.b64decode(value).decode()) for field, value in data.items()}
        self._read_at = self.clock()

    def _add(self, field: str) -> SubjectKey:
        for _ in range(10):
            current = self.kube.get_stored("Secret", self.namespace, SECRET_NAME)
            self._load(current)
            if field in self._keys:  # another replica gave them one first
                return self._keys[field]
            subject = new_subject_key()
            data = {**((current or {}).get("data") or {}), field: base64.b64encode(subject.to_json().encode()).decode()}
            try:
                self.kube.store(stored_body(self.namespace, "Secret", SECRET_NAME, current, data=data))
            except KubeError as error:
                if error.conflict:
                    continue
                raise
            self._keys[field] = subject
            return subject
        raise RuntimeError(f"could not add a subject key: the Secret {SECRET_NAME} keeps changing")
