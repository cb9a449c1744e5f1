"""One list-and-watch pattern for everything the operator watches itself: a session per
:meth:`Watch.step` (run by a :class:`supervisor.Supervised` loop), resumed from the last
resourceVersion when the server ends it on time (bookmarks keep that version fresh).

Any other end (410 Gone after a compaction, the API server restarting, the connection cut) is a
gap in which changes may have been missed: the next session first calls :meth:`Watch.resume`,
which says where to start again and makes up for the gap (relist, or verify the owners again).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Any

from agent_identity.kube.client import KubeError


class Watch(ABC):
    timeout_s: int = 300
    resource_version: str | None = None

    @property
    @abstractmethod
    def name(self) -> str:
        """The loop's name, as /healthz reports it."""

    @abstractmethod
    def current_version(self) -> str:
        """The collection's resourceVersion now."""

    @abstractmethod
    def resume(self) -> str:
        """After a gap: make up for it, and say where the next session starts."""

    @abstractmethod
    def events(self, resource_version: str) -> Iterator[dict[str, Any]]:
        """One session's events from ``resource_version``."""

    @abstractmethod
    def deliver(self, event_type: str, obj: dict[str, Any]) -> None:
        """One ADDED, MODIFIED or DELETED event."""

    def begin(self) -> None:
        """Where the first session starts: now."""
        self.resource_version = self.current_version()

    def step(self) -> None:
        if self.resource_version is None:
            self.resource_version = self.resume()
        try:
            self._session(self.resource_version)
        except KubeError:
            self.resource_version = None  # a gap: the next step resumes
            raise

    def _session(self, resource_version: str) -> None:
        for event in self.events(resource_version):
            event_type, obj = event.get("type"), event.get("object") or {}
            if event_type == "ERROR":  # 410 Gone: the version was compacted away
                if obj.get("code") == 410:
                    self.resource_version = None
                return
            self.resource_version = str((obj.get("metadata") or {}).get("resourceVersion") or self.resource_version)
            if event_type in ("ADDED", "MODIFIED", "DELETED"):
                self.deliver(str(event_type), obj)
