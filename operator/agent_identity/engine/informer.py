"""The operator's own list-and-watch of AgentIdentities, whole objects, into the controller.

Why not kopf's: at a take-over kopf lists every identity and dispatches each through its handler
machinery before its watch starts, so with 30,000 identities an identity created during the
take-over waited 45 s. Here the watch starts first, from the collection's version *now* (one
one-item list), so anything created from that moment on is seen within milliseconds; the full
listing (in pages) then seeds the cache behind it, in the background lane, while new work goes
first. Both feed :meth:`Controller.observe`, which keeps the newest version of each object, so
an object seen by both costs nothing twice.

A gap in the watch (410 Gone, an API server restart) relists: :meth:`Controller.resync` acts on
what changed in the gap, deletions included.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from agent_identity.engine.controller import Controller
from agent_identity.engine.watch import Watch
from agent_identity.kube.client import Kube

log = logging.getLogger(__name__)


class IdentityInformer(Watch):
    def __init__(self, kube: Kube, controller: Controller, namespace: str | None, *, label_selector: str | None) -> None:
        self.kube, self.controller = kube, controller
        self.namespace, self.label_selector = namespace, label_selector

    @property
    def name(self) -> str:
        return "watch-agentidentities" + (f"-{self.namespace}" if self.namespace else "")

    def current_version(self) -> str:
        return self.kube.identities_version(self.namespace, label_selector=self.label_selector)

    def seed(self) -> int:
        """The initial listing: every identity, cached and queued behind anything new."""
        seeded = 0
        for page, _ in self.kube.identity_pages(self.namespace, label_selector=self.label_selector):
            for body in page:  # page by page: the whole listing is never held at once
                self.controller.observe(None, body)
            seeded += len(page)
        return seeded

    def resume(self) -> str:
        return self.relist()

    def relist(self) -> str:
        """A fresh listing: each identity verified again, deletions nobody saw revoked."""
        listed, version = self.kube.list_identity_collection(self.namespace, label_selector=self.label_selector)
        vanished = self.controller.resync(listed, version=version)
        log.info("relisted %s: %d identities, %d deleted unseen", self.namespace or "all namespaces", len(listed), vanished)
        return version

    def events(self, resource_version: str) -> Iterator[dict[str, Any]]:
        return self.kube.watch_identities(
            self.namespace, label_selector=self.label_selector, resource_version=resource_version, timeout_s=self.timeout_s
        )

    def deliver(self, event_type: str, obj: dict[str, Any]) -> None:
        self.controller.observe(event_type, obj)
