"""The operator's own list-and-watch of AgentIdentities, whole objects, into the controller.

Why not kopf's: at a take-over kopf lists every identity and dispatches each through its handler
machinery before its watch starts, so with 30,000 identities an identity created during the
take-over waited 45 s. Here the watch starts first, from the collection's version *now* (one
one-item list), so anything created from that moment on is seen within milliseconds; the full
listing (:meth:`IdentityInformer.relist`, in pages, on the resync loop's thread: its first run)
then seeds the cache behind it, the overdue first and the rest verified in the background lane
once it is complete, while new work goes first. Both feed :meth:`Controller.observe`, which
keeps the newest version of each object, so an object seen by both costs nothing twice.

A gap in the watch (410 Gone, an API server restart) resumes from now and wakes the resync loop,
whose relisting (:meth:`Controller.resync`) acts on what changed in the gap, deletions included.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from agent_identity.api.v1alpha1 import SETTLED_PHASES
from agent_identity.engine.controller import Controller
from agent_identity.engine.watch import Watch
from agent_identity.kube.client import Kube
from agent_identity.plan.children import LABEL_EXPIRES, LABEL_IDENTITY, SELECTOR, ChildKind

log = logging.getLogger(__name__)

READERS = 8  # overdue identities read at once (one request each)


class IdentityInformer(Watch):
    def __init__(
        self,
        kube: Kube,
        controller: Controller,
        namespace: str | None,
        *,
        label_selector: str | None,
        on_gap: Callable[[], None],
    ) -> None:
        self.kube, self.controller = kube, controller
        self.namespace, self.label_selector = namespace, label_selector
        self.on_gap = on_gap

    @property
    def name(self) -> str:
        return "watch-agentidentities" + (f"-{self.namespace}" if self.namespace else "")

    def current_version(self) -> str:
        return self.kube.identities_version(self.namespace, label_selector=self.label_selector)

    def relist(self) -> None:
        """A listing, in pages (the whole listing is never held at once): each identity cached and
        verified again, the overdue retired first, deletions nobody saw revoked. At start-up this
        seeds the cache, behind anything the watch (begun first) shows new."""
        started = time.monotonic()
        first = self.sweep_first()
        if first:
            log.info(
                "%d identities overdue or not settled, found in %.1fs ahead of the listing", first, time.monotonic() - started
            )
        pages = self.kube.identity_pages(self.namespace, label_selector=self.label_selector)
        done = self.controller.resync(pages, namespace=self.namespace)
        log.info(
            "listed %s: %d identities in %.1fs, %d deleted unseen",
            self.namespace or "all namespaces",
            done.listed,
            time.monotonic() - started,
            done.vanished,
        )

    def sweep_first(self) -> int:
        """What must not wait for the listing of every identity (at 100,000, half a minute), found
        with listings the API server filters: identities past their deadline and identities not
        settled yet (created while no operator watched, for one). Each is observed as the full
        listing would observe it (lane_for judges its own status: the overdue go first, the
        unsettled next); the full listing then finds them again, unchanged, at no cost."""
        unsettled = ",".join(f"status.phase!={phase}" for phase in sorted(SETTLED_PHASES))
        found = self._observe_pages(self._identities(field_selector=unsettled, namespace=self.namespace))

        def read(name: tuple[str, str]) -> int:
            return self._observe_pages(self._identities(field_selector=f"metadata.name={name[1]}", namespace=name[0]))

        with ThreadPoolExecutor(READERS, thread_name_prefix="sweep") as readers:
            return found + sum(readers.map(read, self._overdue_names()))

    def _overdue_names(self) -> Iterator[tuple[str, str]]:
        """(namespace, name) of the identities whose ServiceAccount's deadline label has passed.
        The label only orders the work: one whose label was removed or changed is still found by
        the full listing, and its status, not the label, decides what is done."""
        selector = f"{SELECTOR},{LABEL_EXPIRES}<{int(time.time())}"
        for metadata in self.kube.children_metadata(ChildKind.SERVICE_ACCOUNT, self.namespace, label_selector=selector):
            name = (metadata.get("labels") or {}).get(LABEL_IDENTITY)
            if name:
                yield str(metadata.get("namespace")), str(name)

    def _identities(self, *, field_selector: str, namespace: str | None) -> Iterator[tuple[list[dict[str, Any]], str]]:
        # The shard's label selector applies to every listing: another shard's identity is not ours.
        return self.kube.identity_pages(namespace, label_selector=self.label_selector, field_selector=field_selector)

    def _observe_pages(self, pages: Iterator[tuple[list[dict[str, Any]], str]]) -> int:
        observed = 0
        for page, _ in pages:
            for body in page:
                self.controller.observe(None, body)
                observed += 1
        return observed

    def events(self, resource_version: str) -> Iterator[dict[str, Any]]:
        return self.kube.watch_identities(
            self.namespace, label_selector=self.label_selector, resource_version=resource_version, timeout_s=self.timeout_s
        )

    def deliver(self, event_type: str, obj: dict[str, Any]) -> None:
        self.controller.observe(event_type, obj)
