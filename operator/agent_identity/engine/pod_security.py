"""The served namespaces' Pod Security, read every check period (a supervised loop): what the
metrics report, and a Warning Event on each served Namespace that does not keep privileged and
``hostPath`` pods out (policy/pod_security.py says why and judges the labels).

A namespace is warned about once while it stays unenforced: again only after it was seen enforced
in between, or after the operator restarts. Only a replica that may write (the leader) warns; a
standby keeps the metrics. A failed read or Event fails the step (the supervisor retries it), and
what was already read stays reported.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime

from agent_identity.kube.client import Kube
from agent_identity.policy.pod_security import Level, enforced_level, keeps_nodes_out, warning

log = logging.getLogger(__name__)

REASON = "PodSecurityNotEnforced"


class PodSecurityCheck:
    def __init__(
        self,
        kube: Kube,
        *,
        namespaces: Callable[[], Iterable[str]],
        cluster_default: Level,
        clock: Callable[[], datetime],
    ) -> None:
        self._kube, self._namespaces, self._default, self._clock = kube, namespaces, cluster_default, clock
        self._lock = threading.Lock()
        self._enforced: dict[str, bool] = {}
        self._warned: set[str] = set()

    def enforcement(self) -> Mapping[str, bool]:
        """Namespace -> enforced, for every served namespace read so far."""
        with self._lock:
            return dict(self._enforced)

    def step(self) -> None:
        wanted = sorted(set(self._namespaces()))
        with self._lock:
            for gone in set(self._enforced) - set(wanted):
                del self._enforced[gone]
            self._warned &= set(wanted)
        for name in wanted:
            self._check(name)

    def _check(self, name: str) -> None:
        namespace = self._kube.get_namespace(name)
        if namespace is None:  # not created yet, or deleted: nothing runs there
            with self._lock:
                self._enforced.pop(name, None)
            return
        level = enforced_level(namespace["metadata"].get("labels"), cluster_default=self._default)
        enforced = keeps_nodes_out(level)
        with self._lock:
            self._enforced[name] = enforced
            if enforced:
                self._warned.discard(name)
            if enforced or name in self._warned or not self._kube.may_write():
                return
        message = warning(name, level)
        self._kube.record_event(involved=namespace, event_type="Warning", reason=REASON, message=message, now=self._clock())
        log.warning("%s", message)
        with self._lock:
            self._warned.add(name)
