"""Watches the operator's children (ServiceAccounts, Roles, RoleBindings, token Secrets) for
changes made by anyone else, metadata only.

A child event needs no body: who changed which child is all the controller asks, the reconcile
reads the rest. So each kind gets one thread with a metadata-only watch (a Secret's data never
crosses the wire), started from the collection's current resourceVersion: existing children are
not replayed (the reconcile of their owner verifies them), and a gap in the watch (410 Gone after
a compaction, an API server restart) starts again from now, as a relisting informer would
deliver the relisted objects as "existing", which need nothing either; but the owners of children
changed during the gap are verified again, all of them, since nobody knows which.

Why not kopf for the children: docs/design/0003-metadata-only-child-watches.md.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from agent_identity.engine.watch import Watch
from agent_identity.kube.client import Kube
from agent_identity.plan.children import ChildKind

ChildChange = Callable[[str, ChildKind, dict[str, Any]], None]  # (MODIFIED | DELETED, kind, metadata)


class ChildWatch(Watch):
    """A gap starts again from now, and the owners of every child are verified again (``on_gap``):
    a child deleted during the gap is restored."""

    def __init__(
        self,
        kube: Kube,
        kind: ChildKind,
        namespace: str | None,
        *,
        label_selector: str,
        on_change: ChildChange,
        on_gap: Callable[[], None],
        timeout_s: int = 300,
    ) -> None:
        self.kube = kube
        self.kind = kind
        self.namespace = namespace
        self.label_selector = label_selector
        self.on_change, self.on_gap = on_change, on_gap
        self.timeout_s = timeout_s

    @property
    def name(self) -> str:
        return f"watch-{self.kind.lower()}" + (f"-{self.namespace}" if self.namespace else "")

    def current_version(self) -> str:
        return self.kube.children_version(self.kind, self.namespace, label_selector=self.label_selector)

    def events(self, resource_version: str) -> Iterator[dict[str, Any]]:
        return self.kube.watch_children(
            self.kind,
            self.namespace,
            label_selector=self.label_selector,
            resource_version=resource_version,
            timeout_s=self.timeout_s,
        )

    def deliver(self, event_type: str, obj: dict[str, Any]) -> None:
        if event_type != "ADDED":  # ADDED: our own creates, or replays
            self.on_change(event_type, self.kind, obj.get("metadata") or {})
