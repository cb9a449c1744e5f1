"""Active/standby replicas with a coordination.k8s.io Lease, as client-go's leader election does
it. Every replica watches and keeps its cache and deadlines warm; only the lease holder
reconciles. When the holder dies, a standby takes the lease once it has not been renewed for
``lease_duration`` and resumes at once: overdue deadlines fire on the spot.

(kopf's peering pauses watches instead, has no Lease and keeps no warm cache; a Lease is what
Kubernetes operators are expected to use.)
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from .durations import parse_timestamp
from .kube import Kube, KubeError

log = logging.getLogger(__name__)


def _micro(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    def __init__(
        self,
        kube: Kube,
        *,
        namespace: str,
        name: str,
        identity: str,
        clock: Callable[[], datetime],
        on_started_leading: Callable[[], None],
        on_stopped_leading: Callable[[], None],
        lease_duration: timedelta = timedelta(seconds=15),
        retry_period: timedelta = timedelta(seconds=2),
    ) -> None:
        self.kube, self.namespace, self.name, self.identity, self.clock = kube, namespace, name, identity, clock
        self.on_started, self.on_stopped = on_started_leading, on_stopped_leading
        self.lease_duration, self.retry_period = lease_duration, retry_period
        self.leading = False
        self._stop = threading.Event()

    def start(self) -> None:
        threading.Thread(target=self._run, name="leader-election", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while True:
            try:
                holds = self._try_acquire_or_renew()
            except KubeError as error:
                log.warning("leader election: %s", error)
                holds = False
            if holds != self.leading:
                self.leading = holds
                log.info("leader election: %s the lease %s/%s", "holding" if holds else "lost", self.namespace, self.name)
                (self.on_started if holds else self.on_stopped)()
            if self._stop.wait(self.retry_period.total_seconds()):
                return

    def _try_acquire_or_renew(self) -> bool:
        now = self.clock()
        lease = self.kube.get_stored("Lease", self.namespace, self.name)
        spec: dict[str, Any] = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": int(self.lease_duration.total_seconds()),
            "renewTime": _micro(now),
        }
        if lease is None:
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": {**spec, "acquireTime": _micro(now)},
            }
            return self._write(body)
        current = lease.get("spec") or {}
        holder = current.get("holderIdentity")
        renewed = current.get("renewTime")
        duration = timedelta(seconds=int(current.get("leaseDurationSeconds") or 15))
        expired = renewed is None or parse_timestamp(renewed) + duration < now
        if holder not in (None, "", self.identity) and not expired:
            return False
        acquire = current.get("acquireTime") if holder == self.identity else _micro(now)
        transitions = int(current.get("leaseTransitions") or 0) + (0 if holder == self.identity else 1)
        lease["spec"] = {**spec, "acquireTime": acquire, "leaseTransitions": transitions}
        return self._write(lease)

    def _write(self, body: dict[str, Any]) -> bool:
        try:
            self.kube.store(body)
        except KubeError as error:
            if error.conflict:  # another replica wrote first
                return False
            raise
        return True
