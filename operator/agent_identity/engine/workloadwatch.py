"""Watches agent pods and Jobs (labelled agentidentity.dev/identity), metadata only, so that an
identity bound to its workload (spec.boundTo) is looked at the moment that workload changes or
goes: its task may have ended. One thread per resource and namespace; the event names the
identity (its label), the reconcile reads the workload. A gap in the watch starts again from now
and wakes the resync, which looks at every identity again."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from agent_identity.engine.watch import Watch
from agent_identity.kube.client import Kube
from agent_identity.plan.children import LABEL_IDENTITY

WorkloadChange = Callable[[str, dict[str, Any]], None]  # (ADDED | MODIFIED | DELETED, metadata)


class WorkloadWatch(Watch):
    def __init__(
        self,
        kube: Kube,
        resource: str,
        namespace: str | None,
        *,
        on_change: WorkloadChange,
        on_gap: Callable[[], None],
        timeout_s: int = 300,
    ) -> None:
        self.kube, self.resource, self.namespace = kube, resource, namespace
        self.on_change, self.on_gap = on_change, on_gap
        self.timeout_s = timeout_s

    @property
    def name(self) -> str:
        return f"watch-{self.resource}" + (f"-{self.namespace}" if self.namespace else "")

    def current_version(self) -> str:
        return self.kube.workloads_version(self.resource, self.namespace, label_selector=LABEL_IDENTITY)

    def events(self, resource_version: str) -> Iterator[dict[str, Any]]:
        return self.kube.watch_workloads(
            self.resource,
            self.namespace,
            label_selector=LABEL_IDENTITY,
            resource_version=resource_version,
            timeout_s=self.timeout_s,
        )

    def deliver(self, event_type: str, obj: dict[str, Any]) -> None:
        self.on_change(event_type, obj.get("metadata") or {})
