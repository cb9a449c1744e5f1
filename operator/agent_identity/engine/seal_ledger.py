"""The seal ledger: a creator seal vouches for one object, once.

Before an identity is first provisioned its seal is claimed for its uid by creating one Lease in
the operator's namespace, named from a hash of the seal (:func:`seal.ledger_name`): a second
object carrying the same seal (the same name re-created with a copied stamp) meets the existing
Lease and is refused. The claimed identity then carries the operator's binding of the seal to its
uid in its status (:func:`seal.binding`), so later reconciles need no request; a binding copied
onto another object does not hold for that object's uid.

Every step survives a crash: a Lease that names this uid is this object's own claim, made by an
earlier run (proceed); a status without the binding claims again. Once the seal's window has
closed no new object can carry it, so :meth:`SealLedger.sweep` deletes the Lease unless a second
object carrying the seal is still there; after that, an object that finds no Lease is the only one
that can ever carry its seal, and proceeds without writing one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

from agent_identity import GROUP
from agent_identity.api.durations import format_timestamp, parse_timestamp
from agent_identity.api.v1alpha1 import AgentIdentity
from agent_identity.engine import failpoints
from agent_identity.keys.seal import already_vouched, ledger_name, may_forget, sealed_at_of, window_closed
from agent_identity.kube.client import Kube, KubeError
from agent_identity.plan.children import ANNOTATION_SEAL, LABEL_MANAGED_BY, MANAGED_BY

log = logging.getLogger(__name__)

LEDGER_LABEL = f"{GROUP}/seal-ledger"
SELECTOR = f"{LEDGER_LABEL}=claim"
CLAIMED_FOR = f"{GROUP}/claimed-for"  # <namespace>/<name>
CLAIMED_UID = f"{GROUP}/claimed-uid"
SEALED_AT = f"{GROUP}/sealed-at"


class Binder(Protocol):
    """Binds a seal to a uid (``keystore.SealKeys``)."""

    def binding(self, value: str, uid: str) -> str | None: ...

    def bound(self, value: str, uid: str, claimed: str | None) -> bool: ...


def ledger_entry(identity: AgentIdentity, value: str, *, namespace: str, sealed_at: datetime) -> dict[str, Any]:
    """The Lease that claims the seal ``value`` for ``identity``."""
    metadata = identity.metadata
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": ledger_name(value),
            "namespace": namespace,
            "labels": {LABEL_MANAGED_BY: MANAGED_BY, LEDGER_LABEL: "claim"},
            "annotations": {
                CLAIMED_FOR: f"{metadata.namespace}/{metadata.name}",
                CLAIMED_UID: metadata.uid,
                SEALED_AT: format_timestamp(sealed_at),
            },
        },
        "spec": {"holderIdentity": metadata.uid},
    }


class SealLedger:
    def __init__(self, kube: Kube, binder: Binder, *, namespace: str, clock: Callable[[], datetime]) -> None:
        self.kube, self.binder, self.namespace, self.clock = kube, binder, namespace, clock

    def binding(self, identity: AgentIdentity) -> str | None:
        """The binding of the seal of ``identity`` to its uid, for its Ready status."""
        return self.binder.binding(_seal_of(identity), identity.metadata.uid)

    def claim(self, identity: AgentIdentity) -> str | None:
        """Why the (valid) seal of ``identity`` does not vouch for it, or None when it does: it is
        bound to its uid, or claimed for it now. Raises :class:`KubeError` when the API fails."""
        value, uid = _seal_of(identity), identity.metadata.uid
        if self.binder.bound(value, uid, identity.status.seal_binding):
            return None
        sealed_at = sealed_at_of(value)
        if sealed_at is None or not uid:
            return "the creator seal is malformed"
        name = ledger_name(value)
        if window_closed(sealed_at, self.clock()):
            return self._owner_problem(self.kube.get_stored("Lease", self.namespace, name), uid)
        try:
            self.kube.create_stored(ledger_entry(identity, value, namespace=self.namespace, sealed_at=sealed_at))
        except KubeError as error:
            if not error.conflict:
                raise
            return self._owner_problem(self.kube.get_stored("Lease", self.namespace, name), uid)
        failpoints.hit("after-seal-claim")
        return None

    @staticmethod
    def _owner_problem(entry: dict[str, Any] | None, uid: str) -> str | None:
        """None when the ledger entry is this uid's claim or there is none (swept: see the module)."""
        if entry is None:
            return None
        annotations = (entry.get("metadata") or {}).get("annotations") or {}
        claimed_uid = str(annotations.get(CLAIMED_UID, ""))
        if claimed_uid == uid:
            return None
        namespace, _, name = str(annotations.get(CLAIMED_FOR, "/")).partition("/")
        return already_vouched(namespace, name, claimed_uid)

    def sweep(self) -> int:
        """Deletes the entries that may go (:func:`seal.may_forget`); how many went. Leader only."""
        if not self.kube.may_write():
            return 0
        now, forgotten = self.clock(), 0
        for metadata in list(self.kube.stored_metadata("Lease", self.namespace, label_selector=SELECTOR)):
            annotations = metadata.get("annotations") or {}
            sealed_at = parse_timestamp(str(annotations.get(SEALED_AT, "")))
            claimed_uid = str(annotations.get(CLAIMED_UID, ""))
            if not window_closed(sealed_at, now):
                continue
            namespace, _, name = str(annotations.get(CLAIMED_FOR, "/")).partition("/")
            body = self.kube.get_identity(namespace, name) if namespace and name else None
            current = None
            if body is not None:
                stored = body.get("metadata") or {}
                current = (str(stored.get("uid", "")), (stored.get("annotations") or {}).get(ANNOTATION_SEAL))
            entry = str(metadata.get("name", ""))
            if may_forget(entry=entry, claimed_uid=claimed_uid, sealed_at=sealed_at, now=now, current=current):
                forgotten += self.kube.delete_stored("Lease", self.namespace, entry, uid=str(metadata.get("uid", "")))
        if forgotten:
            log.info("seal ledger: %d claims past their window forgotten", forgotten)
        return forgotten


def _seal_of(identity: AgentIdentity) -> str:
    return str((identity.metadata.annotations or {}).get(ANNOTATION_SEAL) or "")
