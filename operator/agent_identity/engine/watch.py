"""One list-and-watch pattern for everything the operator watches itself: a session per
:meth:`Watch.step` (run by a :class:`supervisor.Supervised` loop), resumed from the last
resourceVersion when the server ends it on time (bookmarks keep that version fresh).

Any other end (410 Gone after a compaction, the API server restarting, the connection cut) is a
gap in which changes may have been missed: the next session starts again from *now*, at once,
and ``on_gap`` has the gap made up for on another thread (the resync loop relists, which also
verifies every owner of children again), so no watch stops watching while 100,000 identities
are listed.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from typing import Any

from agent_identity.kube.client import KubeError

log = logging.getLogger(__name__)


class Watch(ABC):
    timeout_s: int = 300
    resource_version: str | None = None
    on_gap: Callable[[], None]  # asks for the gap to be made up for (the resync loop's wake)

    @property
    @abstractmethod
    def name(self) -> str:
        """The loop's name, as /healthz reports it."""

    @abstractmethod
    def current_version(self) -> str:
        """The collection's resourceVersion now."""

    def resume(self) -> str:
        """After a gap: the next session starts from now; what changed in the gap is made up for
        by ``on_gap``, asked for only once the new start is fixed (so it misses nothing)."""
        version = self.current_version()
        log.info("%s resumed after a gap", self.name)
        self.on_gap()
        return version

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
