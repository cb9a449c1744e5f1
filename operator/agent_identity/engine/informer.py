"""The operator's own list-and-watch of AgentIdentities, whole objects, into the controller.

Why not kopf's: docs/design/0002-own-informer-for-agentidentities.md. The watch starts first, from
the collection's version *now* (one one-item list), so anything created from that moment on is seen within milliseconds; the full
listing (:func:`relist`, in pages, on the resync loop's thread: its first run) then seeds the
cache behind it, verified in the background lane once it is complete, while new work goes first.
Ahead of it and while it lasts, listings the API server filters find what cannot wait for it:
the unsettled, and every deadline due before the listing could reach it
(:meth:`IdentityInformer.look_ahead`). Both feed :meth:`Controller.observe`, which
keeps the newest version of each object, so an object seen by both costs nothing twice.

A gap in the watch (410 Gone, an API server restart) resumes from now and wakes the resync loop,
whose relisting (:meth:`Controller.resync`) acts on what changed in the gap, deletions included.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import partial
from typing import Any, TypeVar

from agent_identity.api.v1alpha1 import SETTLED_PHASES
from agent_identity.engine import failpoints
from agent_identity.engine.controller import Controller, Resynced
from agent_identity.engine.watch import Watch
from agent_identity.engine.workqueue import Lane
from agent_identity.kube.client import Kube
from agent_identity.plan.children import LABEL_EXPIRES, LABEL_IDENTITY, SELECTOR, ChildKind

log = logging.getLogger(__name__)
T = TypeVar("T")

# Deadlines this far ahead are looked up before the full listing, and again every half of it
# while the listing lasts, so each is known 30 s early.
AHEAD_S = 60.0
# Before each page the listing waits, this long at most, for the urgent lane to clear: a burst of
# deadlines (a restart after downtime) gets the API server to itself, and so does the new work
# that shares the workers with it. A page still comes at least this often.
GIVE_WAY_S = 5.0


def relist(informers: Sequence[IdentityInformer]) -> None:
    """Every informer's first looks (one per served namespace), then every full listing, with every
    informer's deadlines looked up ahead while any listing lasts."""
    started = time.monotonic()
    first = sum(informer.sweep_first() for informer in informers)
    log.info("%d identities not settled or due within %.0fs, found in %.1fs", first, AHEAD_S, time.monotonic() - started)

    def look_ahead() -> None:
        for informer in informers:
            informer.look_ahead()

    for informer in informers:
        informer.list_all(look_ahead)


@contextmanager
def _timed(spent: dict[str, float], what: str) -> Iterator[None]:
    started = time.monotonic()
    try:
        yield
    finally:
        spent[what] += time.monotonic() - started


def _one_ahead(items: Iterator[T]) -> Iterator[T]:
    """What ``items`` yields, the next one asked for (on one other thread) while the caller works
    on this one: the API server encodes a page while the last is cached. Never more than one
    ahead, and ``items`` is only ever advanced by that thread; its errors reach the caller."""
    with ThreadPoolExecutor(1, thread_name_prefix="listing") as pool:
        pending = pool.submit(next, items, None)
        while (item := pending.result()) is not None:
            pending = pool.submit(next, items, None)
            yield item


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
        controller.seeding(namespace, self.delegates_of, self.read)

    @property
    def name(self) -> str:
        return "watch-agentidentities" + (f"-{self.namespace}" if self.namespace else "")

    def current_version(self) -> str:
        return self.kube.identities_version(self.namespace, label_selector=self.label_selector)

    def sweep_first(self) -> int:
        """What must not wait for the listing of every identity (at 100,000, half a minute or more),
        found with listings the API server filters: identities not settled yet (created while no
        operator watched, for one), observed now, and every deadline due within ``AHEAD_S``
        (:meth:`look_ahead`). Each is observed as the full listing would observe it (lane_for
        judges its own status); the full listing then finds them again, unchanged, at no cost."""
        unsettled = ",".join(f"status.phase!={phase}" for phase in sorted(SETTLED_PHASES))
        return self._observe_pages(self._identities(field_selector=unsettled)) + self.look_ahead()

    def look_ahead(self) -> int:
        """Every deadline due within ``AHEAD_S`` (overdue included), from the ServiceAccounts'
        deadline labels, handed to the controller as expected (:meth:`Controller.expect`): at its
        time the identity is read, unless the listing has brought it by then. The label only
        orders the work: one whose label was removed or changed is still found by the full
        listing, and its status, not the label, decides what is done."""
        selector = f"{SELECTOR},{LABEL_EXPIRES}<{int(time.time() + AHEAD_S)}"
        expected = 0
        for metadata in self.kube.children_metadata(ChildKind.SERVICE_ACCOUNT, self.namespace, label_selector=selector):
            labels = metadata.get("labels") or {}
            name, at = labels.get(LABEL_IDENTITY), labels.get(LABEL_EXPIRES, "")
            if name and at.isdigit():
                key = (str(metadata.get("namespace")), str(name))
                expected += self.controller.expect(key, float(at), partial(self.read, *key))
        return expected

    def read(self, namespace: str, name: str) -> dict[str, Any] | None:
        """One identity, as this informer lists them: another shard's is not ours (None)."""
        for page, _ in self._identities(field_selector=f"metadata.name={name}", namespace=namespace):
            return page[0] if page else None
        return None

    def delegates_of(self, key: tuple[str, str]) -> Iterator[dict[str, Any]]:
        """The identities naming ``key`` as their delegator (the CRD's selectable
        ``spec.delegator.name``; a User of that name too, which the controller tells apart)."""
        for page, _ in self._identities(field_selector=f"spec.delegator.name={key[1]}", namespace=key[0]):
            yield from page

    def list_all(self, between_pages: Callable[[], object]) -> Resynced:
        """The full listing, in pages (the whole listing is never held at once): each identity
        cached and verified again, deletions nobody saw revoked. ``between_pages`` runs every
        ``AHEAD_S / 2`` while it lasts, so no deadline passes unseen behind a long listing."""
        started = time.monotonic()
        spent = {"giving way": 0.0, "waiting": 0.0}  # where the listing's time went, for its log line

        def give_way() -> None:
            with _timed(spent, "giving way"):
                self.controller.queue.wait_until_clear(Lane.URGENT, timeout=GIVE_WAY_S)

        def pages() -> Iterator[tuple[list[dict[str, Any]], str]]:
            look_at = time.monotonic() + AHEAD_S / 2
            # Each page is asked for once the deadlines due have gone first, while the last is cached.
            listing = _one_ahead(self._identities(field_selector=None, before_each=give_way))
            while True:
                with _timed(spent, "waiting"):
                    page = next(listing, None)
                if page is None:
                    return
                failpoints.hit("listing-page")
                yield page
                if time.monotonic() >= look_at:
                    between_pages()
                    look_at = time.monotonic() + AHEAD_S / 2

        done = self.controller.resync(pages(), namespace=self.namespace)
        took = time.monotonic() - started
        log.info(
            "listed %s: %d identities in %.1fs (%.1fs waiting for pages, which gave way to due deadlines for %.1fs; "
            "%.1fs caching and looking ahead), %d deleted unseen",
            self.namespace or "all namespaces",
            done.listed,
            took,
            spent["waiting"],
            spent["giving way"],
            took - spent["waiting"],
            done.vanished,
        )
        return done

    def _identities(
        self,
        *,
        field_selector: str | None,
        namespace: str | None = None,
        before_each: Callable[[], object] = lambda: None,
    ) -> Iterator[tuple[list[dict[str, Any]], str]]:
        # The shard's label selector applies to every listing: another shard's identity is not ours.
        return self.kube.identity_pages(
            namespace or self.namespace,
            label_selector=self.label_selector,
            field_selector=field_selector,
            before_each=before_each,
        )

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
